"""What each stage of a run is given: the fetch request, the render request and the data checks of a report."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from django.utils import timezone

from reporting import conf
from reporting.models import DataSource, Report
from reporting.periods import Period, last_complete_period, period_containing
from reporting.pipeline import checks, fetch, layout, render, split


def period_for_day(report: Report, period_day: date | None) -> Period:
    """The period containing `period_day` in the report's terms; without a day, the last complete one."""
    if period_day is None:
        return last_complete_period(report.period_kind, ZoneInfo(report.timezone))
    return period_containing(report.period_kind, period_day)


def fetch_request_for(report: Report, period: Period, *, recipient: dict[str, str] | None = None) -> fetch.FetchRequest:
    """What to ask the report's data source for `period` (and `recipient`); RenderError for a broken path or parameter.

    A recipient's values go into the path percent-encoded, so that none can change the host,
    add a segment or start a query; into query parameters as they are (encoded as parameters).
    """
    # Plain values only: a template typed by staff must not reach the report's owner, runs or source.
    context = {"period": render.period_values(period), "report": report_values(report)}
    source = report.data_source
    path = render.render_string(
        report.path, {**context, "recipient": split.values_for_path(recipient or {})}, what="path"
    )
    if recipient is not None and (problem := split.path_problem(path)):
        raise render.RenderError(problem)
    params_context = {**context, "recipient": recipient or {}}
    return fetch.FetchRequest(
        base_url=source.base_url,
        path=path,
        params={
            key: render.render_string(str(value), params_context, what=f"query parameter '{key}'")
            for key, value in report.query_params.items()
        },
        auth=auth_for(source),
        connect_timeout=source.connect_timeout,
        read_timeout=source.read_timeout,
        verify_tls=source.verify_tls,
        max_bytes=conf.REPORTING["MAX_RESPONSE_BYTES"],
        # Fields staff removed from the archive are removed for Preview too.
        drop_fields=tuple(fetch.drop_field_entries(source.drop_fields)),
    )


TEST_MARK = "[Test] "


def render_request_for(
    report: Report,
    period: Period,
    data: object,
    *,
    recipient: dict[str, str] | None = None,
    key: str = "",
    test: bool = False,
) -> render.RenderRequest:
    """How to render the report's email from `data` for `period`; for one `recipient` of a per-recipient report,
    with their values, their rows' totals and files named after their `key`. A `test` send's subject says so."""
    rows = fetch.select_rows(data, report.records_path)
    extra: dict = {}
    if recipient is not None:
        columns = render.columns_of(rows)
        extra = {"recipient": recipient, "totals": split.column_totals(rows, columns), "row_count": len(rows)}
    return render.RenderRequest(
        template_name=report.template,
        subject_template=report.subject_template,
        report=report_values(report),
        period=period,
        data=data,
        rows=rows,
        generated_at=timezone.now(),
        timezone=report.timezone,
        attach_csv=report.attach_csv,
        attach_xlsx=report.attach_xlsx,
        attach_pdf=report.attach_pdf,
        pdf_paper=report.pdf_paper,
        charts=render.chart_specs(report.charts),
        max_rows=report.email_max_rows,
        context_extra=extra,
        file_suffix=key,
        subject_prefix=TEST_MARK if test else "",
        layout=layout_of(report),
        locale=report.locale,
    )


def plain_csv_wanted(report: Report) -> bool:
    """Whether the report's email attaches the plain CSV of its rows (no designed layout): a large
    answer's CSV can then be written as its rows stream (fetch.FetchRequest.csv_lines)."""
    try:
        return report.attach_csv and layout_of(report) is None
    except render.RenderError:  # the render stage says what is wrong with the layout
        return False


def layout_of(report: Report) -> layout.Layout | None:
    """The report's designed layout, or None; RenderError in words when what is stored is not valid."""
    try:
        return layout.parse(report.layout)
    except layout.LayoutError as exc:
        raise render.RenderError(f"The report's layout is not valid: {exc.message}") from exc


def report_values(report: Report) -> dict[str, str]:
    """The report as templates see it: its name, slug and description, nothing to walk from."""
    return {"name": report.name, "slug": report.slug, "description": report.description}


def auth_for(source: DataSource) -> fetch.Auth:
    return fetch.Auth(
        scheme=source.auth_scheme, header_name=source.auth_header_name, secret_env_var=source.secret_env_var
    )


def check_settings(report: Report) -> checks.CheckSettings:
    """The data checks of `report`, as the checks module takes them."""
    return checks.CheckSettings(
        min_rows=report.check_min_rows,
        required_fields=checks.field_names(report.check_required_fields),
        max_age_field=report.check_max_age_field.strip(),
        max_age_hours=report.check_max_age_hours,
        timezone=report.timezone,
    )
