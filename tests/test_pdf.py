"""The PDF of the report: the email's HTML and charts on numbered A4 or Letter pages, read back with pypdf."""

from __future__ import annotations

import io
import sys
from datetime import UTC, date, datetime

import cffi
import pytest
from django.urls import reverse
from pypdf import PdfReader

from reporting import runs
from reporting.models import Delivery, Report, ReportRun
from reporting.periods import MONTHLY, Period
from reporting.pipeline import pdf
from reporting.pipeline.charts import ChartSpec
from reporting.pipeline.render import RenderError, RenderRequest, render
from reporting.services import archive as services_archive
from tests import factories
from tests.test_admin import report_form

MAY_2026 = Period(MONTHLY, date(2026, 5, 1), date(2026, 5, 31))
REPORT = {"name": "Positions & Co", "slug": "positions", "description": ""}
A4_POINTS = (595.28, 841.89)  # 210 × 297 mm
LETTER_POINTS = (612, 792)  # 8.5 × 11 in


def positions(count: int) -> list[dict]:
    return [
        {"instrument": f"Position {number:03}", "quantity": number, "market_value": number * 1000.25}
        for number in range(1, count + 1)
    ]


def pdf_request(rows: list[dict], **fields) -> RenderRequest:
    """The project's own Table report of `rows` for May 2026, with a PDF (`fields` override)."""
    fields = {"attach_csv": False, "attach_pdf": True, "max_rows": None, **fields}
    return RenderRequest(
        template_name="reports/table.html",
        subject_template="{{ report.name }} — {{ period.label }}",
        report=REPORT,
        period=MAY_2026,
        data={"rows": rows},
        rows=rows,
        generated_at=datetime(2026, 6, 1, 7, 0, tzinfo=UTC),
        **fields,
    )


def the_pdf(request: RenderRequest) -> bytes:
    [attachment] = [each for each in render(request).files if each.filename.endswith(".pdf")]
    assert attachment.mimetype == "application/pdf"
    return attachment.content


def pages_text(content: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(content)).pages]


def test_the_pdf_shows_the_report_its_period_its_figures_and_page_numbers():
    request = pdf_request(positions(40))
    email = render(request)

    assert [each.filename for each in email.files] == ["positions_2026-05-01_2026-05-31.pdf"]
    texts = pages_text(email.files[0].content)
    assert len(texts) == 2
    for number, text in enumerate(texts, start=1):
        assert "Positions & Co" in text and "May 2026" in text  # the header of every page
        assert f"Page {number} of 2" in text
    assert "Position 001" in texts[0] and "1,000.25" in texts[0]  # a figure as the email shows it
    assert "Position 040" in texts[1] and "40,010.00" in texts[1]


def test_a_long_table_runs_over_pages_with_its_header_row_on_each():
    texts = pages_text(the_pdf(pdf_request(positions(100))))

    assert len(texts) >= 3
    for number, text in enumerate(texts, start=1):
        assert ("instrument" in text, "quantity" in text, "market_value" in text) == (True, True, True), number
        assert f"Page {number} of {len(texts)}" in text
    shown = "".join(texts)
    assert all(f"Position {number:03}" in shown for number in range(1, 101))  # no row lost at a break


def test_the_paper_is_a4_or_letter():
    for paper, (width, height) in ((pdf.A4, A4_POINTS), (pdf.LETTER, LETTER_POINTS)):
        page = PdfReader(io.BytesIO(the_pdf(pdf_request(positions(2), pdf_paper=paper)))).pages[0]

        assert float(page.mediabox.width) == pytest.approx(width, abs=0.5)
        assert float(page.mediabox.height) == pytest.approx(height, abs=0.5)


def test_the_charts_of_the_email_are_drawn_in_the_pdf():
    rows = [{"day": f"2026-05-{day:02}", "value": day * 10} for day in range(1, 8)]
    request = pdf_request(rows, charts=(ChartSpec(kind="line", x="day", y="value", title="Value"),))

    reader = PdfReader(io.BytesIO(the_pdf(request)))

    [image] = reader.pages[0].images
    assert image.image.size == (1280, 600)  # the chart's PNG, drawn at twice its size in the email


def test_a_report_name_cannot_change_the_page_rules():
    name = 'Evil" } @page { size: 10mm } @page { @top-left { content: "x'

    content = pdf.html_to_pdf("<p>Body</p>", title=name, period_label="May 2026", paper=pdf.A4)

    [page] = PdfReader(io.BytesIO(content)).pages
    assert float(page.mediabox.width) == pytest.approx(A4_POINTS[0], abs=0.5)
    assert 'Evil" } @page { size: 10mm }' in page.extract_text()


def test_html_in_the_data_fetches_nothing(httpserver):
    httpserver.expect_request("/x").respond_with_data(b"", content_type="image/png")
    url = httpserver.url_for("/x")
    hostile = (
        f'<img src="{url}"><link rel="stylesheet" href="{url}">'
        f"<style>@import url({url}); p {{ background: url({url}) }}</style>"
    )
    # As API data the value is text, shown as such; as markup (a staff template) nothing is fetched either.
    from_data = pages_text(the_pdf(pdf_request([{"instrument": hostile}])))
    pdf.html_to_pdf(f"<html><body><p>{hostile}</p></body></html>", title="x", period_label="y")

    assert f'<img src="{url}">' in " ".join(" ".join(from_data).split())
    assert httpserver.log == []
    # The server does count: WeasyPrint left to its own fetcher asks it.
    import weasyprint

    weasyprint.HTML(string=f'<img src="{url}">').write_pdf()
    assert len(httpserver.log) == 1


@pytest.fixture
def without_pango(monkeypatch):
    """WeasyPrint imported afresh on a machine where cffi cannot load pango."""
    import weasyprint  # noqa: F401  (loaded for real first, then put back after the test)

    loaded = [name for name in sys.modules if name.split(".")[0] == "weasyprint"]
    for name in loaded:
        monkeypatch.delitem(sys.modules, name)
    real_dlopen = cffi.FFI.dlopen

    def dlopen(ffi, name, *args, **kwargs):
        if "pango" in str(name):
            raise OSError(f"cannot load library '{name}': {name}: cannot open shared object file")
        return real_dlopen(ffi, name, *args, **kwargs)

    monkeypatch.setattr(cffi.FFI, "dlopen", dlopen)
    yield
    for name in [name for name in sys.modules if name.split(".")[0] == "weasyprint"]:
        del sys.modules[name]  # half-imported; monkeypatch puts the real modules back


def test_without_pango_the_pdf_fails_in_words(without_pango):
    with pytest.raises(RenderError) as caught:
        render(pdf_request(positions(1)))

    assert caught.value.message.startswith(
        "PDF could not be made: the system library pango is missing; install it with "
        "`apt-get install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0`"
    )
    assert "cannot load library" in caught.value.detail


@pytest.mark.django_db
def test_without_pango_a_run_with_a_pdf_fails_in_words_and_sends_nothing(report, use_smtp, without_pango):
    Report.objects.filter(pk=report.pk).update(attach_pdf=True)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)

    run = runs.execute_run(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == ReportRun.Status.FAILED
    assert run.error.startswith("PDF could not be made: the system library pango is missing; install it")
    assert use_smtp.messages == []


@pytest.mark.django_db
def test_a_run_sends_and_archives_the_pdf_and_a_resend_carries_the_same_bytes(report, use_smtp):
    Report.objects.filter(pk=report.pk).update(attach_pdf=True, pdf_paper=pdf.LETTER)
    run = runs.create_manual_run(report_id=report.pk, period_day=date(2026, 11, 20), requested_by_id=None)

    run = runs.execute_run(run_id=run.pk)

    [sent, _bob] = use_smtp.messages
    attached = {part.get_filename(): part for part in sent.iter_attachments()}
    assert list(attached) == ["portfolio_2026-11-20.csv", "portfolio_2026-11-20.pdf"]
    assert attached["portfolio_2026-11-20.pdf"].get_content_type() == "application/pdf"
    content = attached["portfolio_2026-11-20.pdf"].get_content()
    [text] = pages_text(content)
    assert "Portfolio" in text and "20 November 2026" in text and "Page 1 of 1" in text
    assert "Globex 4.25% 2032" in text and "49,875.00" in text
    assert float(PdfReader(io.BytesIO(content)).pages[0].mediabox.width) == pytest.approx(612)
    archived = run.attachments.get(filename="portfolio_2026-11-20.pdf")
    assert (archived.mimetype, archived.file.read()) == ("application/pdf", content)

    services_archive.resend_here(run_id=run.pk, addresses=["carol@example.com"], actor=None)

    [resent] = use_smtp.messages_to("carol@example.com")
    [again] = [part for part in resent.iter_attachments() if part.get_filename() == "portfolio_2026-11-20.pdf"]
    assert again.get_content() == content
    assert run.deliveries.get(kind=Delivery.Kind.RESEND).status == Delivery.Status.SENT


@pytest.mark.django_db
def test_the_report_form_sets_the_pdf_and_its_paper(staff_client, source):
    url = reverse("admin:reporting_report_add")
    page = staff_client.get(url).content.decode()
    assert 'name="attach_pdf"' in page and 'name="pdf_paper"' in page

    response = staff_client.post(url, report_form(source, attach_pdf="on", pdf_paper="letter"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Report.objects.values_list("attach_pdf", "pdf_paper").get(slug="collections") == (True, "letter")


@pytest.mark.django_db
def test_a_report_form_without_the_paper_keeps_the_reports_own(staff_client, source):
    report = factories.report(source, slug="collections", pdf_paper=pdf.LETTER)
    form = report_form(source)  # posted as before the PDF: no attach_pdf, no pdf_paper

    response = staff_client.post(reverse("admin:reporting_report_change", args=[report.pk]), form)

    assert response.status_code == 302, response.context["adminform"].form.errors
    report.refresh_from_db()
    assert (report.attach_pdf, report.pdf_paper) == (False, pdf.LETTER)
