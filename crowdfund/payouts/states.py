"""The box-office report and payout run state machines. Pure: no database, no Flask."""

from __future__ import annotations

from enum import StrEnum

from crowdfund.films.states import FilmState
from crowdfund.payouts.models import ReportStatus, RunStatus

#: A submitted report is decided once; approved and rejected reports never change
#: (a correction is a new report).
REPORT_TRANSITIONS: dict[ReportStatus, frozenset[ReportStatus]] = {
    ReportStatus.SUBMITTED: frozenset({ReportStatus.APPROVED, ReportStatus.REJECTED}),
    ReportStatus.APPROVED: frozenset(),
    ReportStatus.REJECTED: frozenset(),
}

#: Computing until every statement is written; paid once finance confirms the transfer.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.COMPUTING: frozenset({RunStatus.COMPUTED}),
    RunStatus.COMPUTED: frozenset({RunStatus.PAID}),
    RunStatus.PAID: frozenset(),
}


# --- what a studio or finance user may do (the pages show exactly these) -------------------


class PayoutAction(StrEnum):
    """What the box-office and payout pages offer. A StrEnum: templates test
    `"approve" in actions`."""

    #: File a box-office report: a released film's (payouts.box_office.file_report).
    FILE_REPORT = "file_report"
    APPROVE = "approve"
    REJECT = "reject"
    #: Download a run's CSV and XLSX: once its statements are written.
    EXPORT = "export"
    MARK_PAID = "mark_paid"


#: Reports are filed for a released film; a closed one accepts no more.
FILING_STATES = frozenset({FilmState.RELEASED})


def filing_actions(film_state: str) -> frozenset[PayoutAction]:
    return frozenset({PayoutAction.FILE_REPORT}) if FilmState(film_state) in FILING_STATES else frozenset()


def filing_note(film_state: str) -> str:
    """Why a film's page offers no report form."""
    if FilmState(film_state) is FilmState.CLOSED:
        return "The film is closed: it accepts no more box-office reports."
    return "Reports are filed once the film is marked released."


def report_actions(
    status: str, film_studio_id: int | None, decider_studio_id: int | None
) -> frozenset[PayoutAction]:
    """A submitted report is approved or rejected, never by a member of the film's studio."""
    allowed = REPORT_TRANSITIONS[ReportStatus(status)]
    if decider_studio_id and decider_studio_id == film_studio_id:
        return frozenset()
    actions = set()
    if ReportStatus.APPROVED in allowed:
        actions.add(PayoutAction.APPROVE)
    if ReportStatus.REJECTED in allowed:
        actions.add(PayoutAction.REJECT)
    return frozenset(actions)


def awaits_decision(status: str) -> bool:
    """The report is still to be decided (by someone)."""
    return bool(REPORT_TRANSITIONS[ReportStatus(status)])


def run_actions(status: str, started_by_id: int | None, user_id: int | None) -> frozenset[PayoutAction]:
    """Who starts a run never marks it paid (payouts.runs.mark_paid)."""
    current = RunStatus(status)
    actions = set()
    if current is not RunStatus.COMPUTING:
        actions.add(PayoutAction.EXPORT)
    if RunStatus.PAID in RUN_TRANSITIONS[current] and started_by_id != user_id:
        actions.add(PayoutAction.MARK_PAID)
    return frozenset(actions)


def awaits_transfer(status: str) -> bool:
    """Computed: the studio's transfer is still to be confirmed (by someone)."""
    return RunStatus.PAID in RUN_TRANSITIONS[RunStatus(status)]


def is_paid(status: str) -> bool:
    return status == RunStatus.PAID
