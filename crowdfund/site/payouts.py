from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from crowdfund.accounts.models import Role
from crowdfund.errors import DomainError
from crowdfund.films import services as films
from crowdfund.payouts import box_office
from crowdfund.payouts import runs as payout_runs
from crowdfund.payouts import statements as payout_statements
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun, ReportStatus
from crowdfund.reports.exports import ledger_csv, run_csv, run_xlsx, stream_file
from crowdfund.site.forms.accounts import EmptyForm
from crowdfund.site.forms.payouts import LedgerExportForm, PaidForm, RejectForm, ReportForm
from crowdfund.site.unit_of_work import on_error
from crowdfund.site.web import db, now, role_required, stream_query, user
from crowdfund.workflows import payout_run

payouts_bp = Blueprint("payouts", __name__)


def _report_or_404(report_id: int) -> BoxOfficeReport:
    return db().get(BoxOfficeReport, report_id) or abort(404)


def _run_or_404(run_id: int) -> PayoutRun:
    return db().get(PayoutRun, run_id) or abort(404)


# --- studio: filing reports -------------------------------------------------------------


@payouts_bp.route("/studio/films/<int:film_id>/reports", methods=["GET", "POST"])
@role_required(Role.STUDIO)
def studio_reports(film_id: int) -> Any:
    film = films.studio_film(db(), user(), film_id)
    form = ReportForm()

    def page() -> Any:
        status = 400 if form.errors or request.method == "POST" else 200
        return render_template(
            "payouts/studio_reports.html",
            film=film,
            form=form,
            reports=box_office.film_reports(db(), film.id),
            runs=payout_runs.previous_runs(db(), film.id),
        ), status

    def refused(exc: DomainError) -> Any:
        target = getattr(form, exc.field, None) if exc.field else None
        if target is not None:
            target.errors.append(exc.message)
        else:
            flash(exc.message, "error")
        return page()

    if form.validate_on_submit():
        upload = form.file.data
        attachment = None
        max_bytes = current_app.config["REPORT_FILE_MAX_BYTES"]
        if upload is not None and getattr(upload, "filename", None):
            attachment = upload.read(max_bytes + 1)
        start, end = form.period_start.data, form.period_end.data
        assert (
            start is not None and end is not None
        )  # InputRequired; a date that does not parse fails validation
        data = box_office.ReportInput(
            start,
            end,
            form.net_receipts.cents,
            form.note.data or "",
            corrects_report_id=getattr(form.corrects_report, "report_id", None),
        )
        with on_error(respond=refused):
            box_office.file_report(
                db(), film, user(), data, now=now(), attachment=attachment, max_bytes=max_bytes
            )
        flash("Report filed. Finance will review it.", "success")
        return redirect(url_for("payouts.studio_reports", film_id=film.id), 303)
    return page()


@payouts_bp.route("/box-office/<int:report_id>/file")
@role_required(Role.STUDIO, Role.FINANCE)
def report_file(report_id: int) -> Any:
    report = _report_or_404(report_id)
    if not user().has_role(Role.FINANCE) and user().studio_id != report.film.studio_id:
        abort(404)
    stored = box_office.supporting_file(db(), report) or abort(404)
    extension = "pdf" if stored.content_type == "application/pdf" else "csv"
    response = Response(stored.data, mimetype=stored.content_type)
    # Always a download, never rendered by the browser as a page.
    response.headers["Content-Disposition"] = f'attachment; filename="box-office-{report.id}.{extension}"'
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# --- finance: decisions, runs, exports ------------------------------------------------------


@payouts_bp.route("/finance/reports")
@role_required(Role.FINANCE)
def finance_reports() -> Any:
    approved = list(
        db().scalars(
            select(BoxOfficeReport)
            .where(BoxOfficeReport.status == ReportStatus.APPROVED)
            .order_by(BoxOfficeReport.decided_at.desc())
            .limit(200)
        )
    )
    runs = (
        {
            run.report_id: run
            for run in db().scalars(
                select(PayoutRun).where(PayoutRun.report_id.in_([r.id for r in approved]))
            )
        }
        if approved
        else {}
    )
    return render_template(
        "payouts/finance_reports.html", waiting=box_office.reports_waiting(db()), approved=approved, runs=runs
    )


@payouts_bp.route("/finance/reports/<int:report_id>")
@role_required(Role.FINANCE)
def finance_report(report_id: int) -> Any:
    return _finance_report_page(_report_or_404(report_id))


def _finance_report_page(report: BoxOfficeReport, status: int = 200) -> Any:
    run = db().scalar(select(PayoutRun).where(PayoutRun.report_id == report.id))
    next_up = payout_runs.next_report_to_run(db(), report.film_id)
    figures = payout_runs.preview(db(), report) if run is None and report.status == "approved" else None
    return render_template(
        "payouts/finance_report.html",
        report=report,
        run=run,
        figures=figures,
        can_run=next_up is not None and next_up.id == report.id,
        approve_form=EmptyForm(prefix="approve"),
        reject_form=RejectForm(prefix="reject"),
        run_form=EmptyForm(prefix="run"),
    ), status


def _decide(report_id: int, action: str) -> Any:
    report = _report_or_404(report_id)

    def refused(exc: DomainError) -> Any:
        flash(exc.message, "error")
        # Refused (not allowed, or an overlapping period): the page again, with the reason and the status.
        return _finance_report_page(_report_or_404(report_id), exc.status_code)

    with on_error(respond=refused):
        if action == "approve":
            if not EmptyForm(prefix="approve").validate_on_submit():
                abort(400)
            box_office.approve_report(db(), report, user(), now=now())
            message = "Report approved."
        else:
            form = RejectForm(prefix="reject")
            if not form.validate_on_submit():
                flash("Say why the report is rejected.", "error")
                return redirect(url_for("payouts.finance_report", report_id=report.id), 303)
            box_office.reject_report(db(), report, user(), form.reason.data, now=now())
            message = "Report rejected; the studio sees your reason."
    flash(message, "success")
    return redirect(url_for("payouts.finance_report", report_id=report.id), 303)


@payouts_bp.route("/finance/reports/<int:report_id>/approve", methods=["POST"])
@role_required(Role.FINANCE)
def approve_report(report_id: int) -> Any:
    return _decide(report_id, "approve")


@payouts_bp.route("/finance/reports/<int:report_id>/reject", methods=["POST"])
@role_required(Role.FINANCE)
def reject_report(report_id: int) -> Any:
    return _decide(report_id, "reject")


@payouts_bp.route("/finance/reports/<int:report_id>/run", methods=["POST"])
@role_required(Role.FINANCE)
def start_run(report_id: int) -> Any:
    report = _report_or_404(report_id)
    if not EmptyForm(prefix="run").validate_on_submit():
        abort(400)
    # The statements are written by workers, from an outbox row committed with the run.
    with on_error(redirect_to=url_for("payouts.finance_report", report_id=report.id)):
        run = payout_run.start_payout(db(), report, user(), now=now())
    if run.status == "computing":
        flash(
            f"The run started: workers write the {run.backers} statements and e-mail each backer. "
            "This page shows when they are done.",
            "info",
        )
    else:
        flash(f"Payout run complete: {run.backers} statements.", "success")
    return redirect(url_for("payouts.finance_run", run_id=run.id), 303)


@payouts_bp.route("/finance/runs/<int:run_id>")
@role_required(Role.FINANCE)
def finance_run(run_id: int) -> Any:
    return _finance_run_page(_run_or_404(run_id))


def _finance_run_page(run: PayoutRun, status: int = 200) -> Any:
    return render_template("payouts/finance_run.html", run=run, paid_form=PaidForm()), status


@payouts_bp.route("/finance/runs/<int:run_id>/paid", methods=["POST"])
@role_required(Role.FINANCE)
def mark_paid(run_id: int) -> Any:
    run = _run_or_404(run_id)
    form = PaidForm()
    if not form.validate_on_submit():
        flash("Enter the bank transfer's reference.", "error")
        return redirect(url_for("payouts.finance_run", run_id=run.id), 303)

    def refused(exc: DomainError) -> Any:
        flash(exc.message, "error")
        return _finance_run_page(_run_or_404(run_id), exc.status_code)

    with on_error(respond=refused):
        payout_runs.mark_paid(db(), run, user(), form.bank_reference.data, now=now())
    flash("Run marked paid.", "success")
    return redirect(url_for("payouts.finance_run", run_id=run.id), 303)


def _export_name(run: PayoutRun, extension: str) -> str:
    return f"payout-{run.film.slug}-run{run.sequence}.{extension}"


@payouts_bp.route("/finance/runs/<int:run_id>/statements.csv")
@role_required(Role.FINANCE)
def export_csv(run_id: int) -> Any:
    run = _run_or_404(run_id)
    if run.status == "computing":
        abort(409)
    pool, name = run.pool_cents, _export_name(run, "csv")
    response = Response(
        run_csv(stream_query(payout_statements.export_rows, run.id), pool, run.payment_status),
        mimetype="text/csv",
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@payouts_bp.route("/finance/runs/<int:run_id>/statements.xlsx")
@role_required(Role.FINANCE)
def export_xlsx(run_id: int) -> Any:
    run = _run_or_404(run_id)
    if run.status == "computing":
        abort(409)
    pool, name, title, status = (
        run.pool_cents,
        _export_name(run, "xlsx"),
        f"Run {run.sequence}",
        run.payment_status,
    )
    path = run_xlsx(stream_query(payout_statements.export_rows, run.id), pool, title, status)
    response = Response(
        stream_file(path), mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@payouts_bp.route("/finance/ledger")
@role_required(Role.FINANCE)
def ledger_export() -> Any:
    form = LedgerExportForm(request.args)
    if request.args and form.validate():
        start, end = form.start.data, form.end.data
        assert (
            start is not None and end is not None
        )  # InputRequired; a date that does not parse fails validation
        if end < start:
            form.end.errors.append("The end comes before the start.")
        else:
            response = Response(stream_query(ledger_csv, start, end), mimetype="text/csv")
            response.headers["Content-Disposition"] = f'attachment; filename="ledger-{start}-{end}.csv"'
            return response
    return render_template("payouts/ledger_export.html", form=form), 400 if form.errors else 200


# --- backers: statements ------------------------------------------------------------------


@payouts_bp.route("/statements")
@role_required(Role.FAN)
def statements() -> Any:
    listed = payout_statements.user_statements(db(), user().id)
    paid = payout_statements.paid_to_user(db(), user().id, sorted({s.run.film_id for s in listed}))
    return render_template("payouts/statements.html", statements=listed, paid=paid)


def _statement_context(statement_id: int) -> dict[str, Any]:
    statement = payout_statements.own_statement(db(), user(), statement_id)
    paid = payout_statements.paid_to_user(db(), user().id, [statement.run.film_id])[statement.run.film_id]
    return {
        "statement": statement,
        "run": statement.run,
        "film": statement.run.film,
        "report": statement.run.report,
        "paid_to_you": paid,
    }


@payouts_bp.route("/statements/<int:statement_id>")
@role_required(Role.FAN)
def statement(statement_id: int) -> Any:
    return render_template("payouts/statement.html", **_statement_context(statement_id))


@payouts_bp.route("/statements/<int:statement_id>.pdf")
@role_required(Role.FAN)
def statement_pdf(statement_id: int) -> Any:
    from weasyprint import HTML

    context = _statement_context(statement_id)
    html = render_template("payouts/statement_pdf.html", **context)
    pdf = HTML(string=html, base_url=request.url_root).write_pdf()
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="statement-{context["statement"].number}.pdf"'
    )
    return response
