"""The one way every state machine moves: films, orders, refunds, tickets,
box-office reports and payout runs.

Each machine declares its transition table in its own rules/states module
and is described here by a `Machine` (its table, its state column, and
whether it keeps a history row or audits its moves). `move()` then

1. checks the transition against the table,
2. updates conditionally on the state the object was read in:
   `UPDATE <table> SET <state> = :target, ... WHERE id = :id AND <state> = :read`,
3. checks the row count: of two movers exactly one wins; the loser's object
   is refreshed to what won and `move()` returns False (the caller turns that
   into its own Conflict, or into "nothing to do"),
4. writes the history row and the audit record where the machine has them,
   in the caller's transaction.

Set-based moves (releasing a film's lapsed holds in one UPDATE) stay
set-based but check their transition with `check()` against the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from crowdfund import audit
from crowdfund.db import rowcount
from crowdfund.errors import InvalidTransition

#: A state as stored; None where a machine starts from "no state yet" (refunds).
State = str | None
#: Builds a machine's history row: (object id, from, to, actor id, reason, now).
HistoryRow = Callable[[Any, State, State, int | None, str | None, datetime], Any]


@dataclass(frozen=True)
class Machine:
    #: Named in InvalidTransition's message: "A film cannot go from ... to ...".
    name: str
    #: The mapped class whose rows move, and the column that holds the state.
    model: type[Any]
    column: str
    #: State -> the states it may move to, keyed by the machine's own enum (a
    #: str) and None; Any because a Mapping's key type is invariant.
    transitions: Mapping[Any, frozenset[Any]]
    #: Target state -> audit action; a move to a target not listed is not audited.
    audit_actions: Mapping[State, str] = field(default_factory=dict)
    audit_object_type: str = ""
    #: What the audit log names the object by (an order's reference, say).
    audit_object_id: Callable[[Any], object] = lambda obj: obj.id
    history: HistoryRow | None = None
    #: After a win, set the written values as loaded (no reload) instead of
    #: expiring the object (the next access reads it again).
    keep_loaded: bool = False


def allowed(machine: Machine, current: State, target: State) -> bool:
    return target in machine.transitions.get(current, frozenset())


def check(machine: Machine, current: State, target: State) -> None:
    """Raise InvalidTransition unless the machine may go from `current` to `target`."""
    if not allowed(machine, current, target):
        raise InvalidTransition(machine.name, str(current), str(target))


def move(
    session: Session,
    machine: Machine,
    obj: Any,
    target: State,
    *,
    now: datetime | None = None,
    actor: Any = None,
    reason: str | None = None,
    values: Mapping[str, object] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    audit_after: Mapping[str, object] | None = None,
) -> bool:
    """Move `obj` to `target` if it is still in the state it was read in (and
    `where` still holds). True if this call moved it; False if another
    transaction moved it first (then `obj` is refreshed and nothing is written).

    `now`: when, for the history row and the audit record (required where
    the machine keeps them). `values`: other columns written with the state. `actor`: a User, a user id
    or None (the system). `reason`: kept in the history row and the audit
    record's detail. `audit_after`: more fields for the audit record's "after".
    """
    current: State = getattr(obj, machine.column)
    check(machine, current, target)
    model = machine.model
    state_column = getattr(model, machine.column)
    target_value = None if target is None else str(target)
    assignments: dict[str, object] = {machine.column: target_value, **(values or {})}
    # Read before the UPDATE: after it the object may be expired.
    object_id = obj.id
    action = machine.audit_actions.get(target)
    audited_id = machine.audit_object_id(obj) if action else None
    read = state_column.is_(None) if current is None else state_column == current
    moved = rowcount(
        session.execute(
            update(model)
            .where(model.id == object_id, read, *where)
            .values(**assignments)
            .execution_options(synchronize_session=False)
        )
    )
    if moved != 1:
        session.refresh(obj)
        return False
    if machine.keep_loaded:
        for name, value in assignments.items():
            set_committed_value(obj, name, value)
    else:
        session.expire(obj)
    actor_id = getattr(actor, "id", actor)
    if not action and machine.history is None:
        return True
    assert now is not None, f"a {machine.name} move is recorded: pass now="
    if action:
        audit.record(
            session,
            action=action,
            object_type=machine.audit_object_type,
            object_id=audited_id,
            now=now,
            actor=actor_id,
            before={machine.column: current},
            after={machine.column: target_value, **(audit_after or {})},
            detail=reason or "",
        )
    if machine.history is not None:
        session.add(machine.history(object_id, current, target_value, actor_id, reason, now))
    return True
