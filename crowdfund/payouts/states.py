"""The box-office report and payout run state machines. Pure: no database, no Flask."""

from __future__ import annotations

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
