"""Attachments over the size limit: archived, linked from the email (both parts), never attached."""

import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from reporting import attachments, runs, stage_inputs
from reporting.archive import snapshot_data
from reporting.demo import data as demo
from reporting.models import Delivery, Report, ReportRun, RunAttachment, RunPart
from reporting.pipeline import render
from reporting.services import archive as services_archive
from tests import factories

pytestmark = pytest.mark.django_db
SITE = "https://reports.example.com"
MB = 1024 * 1024


@pytest.fixture
def limit(settings):
    """Set the attachment limit (encoded bytes) for this test; links point at SITE."""

    def set_limit(max_bytes: int) -> None:
        settings.REPORTING = {**settings.REPORTING, "MAX_ATTACHMENT_BYTES": max_bytes, "SITE_URL": SITE + "/"}

    return set_limit


@pytest.fixture
def big_report(httpserver):
    """A report whose CSV is about 1.2 MB: 12,000 rows."""
    rows = [{"instrument": f"Position {number:05}", "note": "x" * 80} for number in range(1, 12_001)]
    httpserver.expect_request("/api/positions").respond_with_json({"data": {"positions": rows}})
    return factories.report(factories.data_source(httpserver.url_for("/api/")))


def run_for(report, day=date(2026, 11, 20)) -> ReportRun:
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=day, requested_by_id=None).pk)
    run.refresh_from_db()
    return run


def encoded(size: int) -> int:
    return 4 * math.ceil(size / 3)


def test_a_csv_over_the_limit_is_archived_and_linked_instead_of_attached(big_report, limit, use_smtp):
    limit(1 * MB)

    run = run_for(big_report)

    assert run.status == ReportRun.Status.SENT
    [attachment] = run.attachments.all()
    assert attachment.linked and attachment.filename == "portfolio_2026-11-20.csv"
    url = SITE + reverse("admin:reporting_reportrun_file", args=[run.pk, attachment.filename])
    assert len(use_smtp.messages) == 2
    for message in use_smtp.messages:
        assert list(message.iter_attachments()) == []
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert f'<a href="{url}"' in html and "is too large to attach" in html
        assert f"is too large to attach. Download it from the archive:\n{url}\n" in text
        assert "Showing 50 of 12,000 rows." in text and "attached CSV" not in text
    expected_size = f"{encoded(attachment.size) / MB:.1f} MB"
    assert run.notes == (
        f"portfolio_2026-11-20.csv ({expected_size} encoded) is over the 1 MB attachment limit; "
        "the email links to the archived file instead."
    )
    with attachment.file.open("rb") as stored:
        assert stored.read().decode("utf-8-sig").count("\r\n") == 12_001  # the header and every row


def test_the_link_needs_a_signed_in_user_with_the_view_permission(big_report, limit, client):
    limit(1 * MB)
    run = run_for(big_report)
    attachment = run.attachments.get()
    path = urlsplit(re.search(r'href="([^"]+/files/[^"]+)"', run.body_html)[1]).path
    assert path == reverse("admin:reporting_reportrun_file", args=[run.pk, attachment.filename])

    signed_out = client.get(path)
    client.force_login(factories.staff_user("sam"))
    no_permission = client.get(path)
    client.force_login(factories.staff_user("vic", "view_reportrun"))
    viewer = client.get(path)

    assert signed_out.status_code == 302 and signed_out["Location"].startswith(reverse("admin:login"))
    assert no_permission.status_code == 403
    assert viewer.status_code == 200
    content = b"".join(viewer.streaming_content).decode("utf-8-sig")
    assert content.startswith("instrument,note\r\nPosition 00001,") and content.count("\r\n") == 12_001


def test_the_limit_counts_the_encoded_size(report, limit, use_smtp):
    first = run_for(report, date(2026, 11, 18))
    size = encoded(first.attachments.get().size)

    limit(size)
    at_limit = run_for(report, date(2026, 11, 19))
    limit(size - 1)
    over = run_for(report, date(2026, 11, 20))

    assert not at_limit.attachments.get().linked and at_limit.notes == ""
    assert len([*use_smtp.messages_to("ann@example.com")[1].iter_attachments()]) == 1
    assert over.attachments.get().linked
    assert over.notes == (
        f"portfolio_2026-11-20.csv ({size} bytes encoded) is over the {size - 1} bytes attachment limit; "
        "the email links to the archived file instead."
    )
    assert [*use_smtp.messages_to("ann@example.com")[2].iter_attachments()] == []


def test_a_resend_links_to_the_file_too(big_report, limit, use_smtp):
    limit(1 * MB)
    run = run_for(big_report)
    use_smtp.messages.clear()
    attachment = run.attachments.get()

    services_archive.resend_here(run_id=run.pk, addresses=["carol@example.com"], actor=None)

    [message] = use_smtp.messages_to("carol@example.com")
    assert list(message.iter_attachments()) == []
    url = SITE + reverse("admin:reporting_reportrun_file", args=[run.pk, attachment.filename])
    assert url in message.get_body(("html",)).get_content()
    assert run.deliveries.get(kind=Delivery.Kind.RESEND).status == Delivery.Status.SENT


def test_a_report_with_its_own_text_template_gets_the_link_in_its_text_part(httpserver, limit, use_smtp):
    httpserver.expect_request("/api/portfolio").respond_with_json(demo.daily_portfolio(date(2026, 11, 20)))
    report = factories.report(
        factories.data_source(httpserver.url_for("/api/")),
        addresses=["ann@example.com"],
        path="portfolio",
        records_path="positions",
        template="reports/portfolio_summary.html",
    )
    limit(100)

    run = run_for(report)

    url = SITE + reverse("admin:reporting_reportrun_file", args=[run.pk, run.attachments.get().filename])
    [message] = use_smtp.messages
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.count(url) == 1 and "POSITIONS (" in text
    assert text.rstrip().endswith(f"is too large to attach. Download it from the archive:\n{url}")
    assert url in message.get_body(("html",)).get_content()


def test_the_limit_is_read_from_the_environment():
    code = "from django.conf import settings; print(settings.REPORTING['MAX_ATTACHMENT_BYTES'])"

    def read(**env: str) -> str:
        clean = {key: value for key, value in os.environ.items() if not key.startswith("REPORTING_MAX_ATT")}
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
            cwd=Path(__file__).resolve().parents[1],
            env={**clean, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return (result.stdout + result.stderr).strip()

    assert read() == str(10 * MB)
    assert read(REPORTING_MAX_ATTACHMENT_BYTES="5000000") == "5000000"
    assert "REPORTING_MAX_ATTACHMENT_BYTES must be a whole number, not 'ten'." in read(
        REPORTING_MAX_ATTACHMENT_BYTES="ten"
    )


def test_an_email_linking_its_csv_is_rendered_once(big_report, limit, monkeypatch):
    rendered = []
    real = render._render_file
    monkeypatch.setattr(
        render, "_render_file", lambda names, *a, **k: rendered.append(names[0]) or real(names, *a, **k)
    )
    limit(1 * MB)

    run = run_for(big_report)

    assert run.attachments.get().linked
    assert rendered == ["reports/table.html", "reports/table.txt"]  # the body and the text part, once each
    url = SITE + reverse("admin:reporting_reportrun_file", args=[run.pk, "portfolio_2026-11-20.csv"])
    assert f'<a href="{url}"' in run.body_html and url in run.body_text
    assert "attached CSV" not in run.body_text


def test_the_link_serves_the_file_a_later_attempt_archived_again(big_report, limit, client):
    limit(1 * MB)
    run = run_for(big_report)
    first = run.attachments.get()
    link = urlsplit(re.search(r'href="([^"]+/files/[^"]+)"', run.body_html)[1]).path

    # A later attempt of the run renders its files again and archives them in place of these.
    request = replace(
        stage_inputs.render_request_for(run.report, run.period, snapshot_data(run)),
        link_files=attachments.links_to_files(run.pk),
    )
    email, _linked = attachments.store(run, request, render.render(request), replace=True)
    again = run.attachments.get()
    client.force_login(factories.staff_user("vic", "view_reportrun"))

    assert again.pk != first.pk and again.linked
    assert link in email.html  # the same address in the email of either attempt
    response = client.get(link)
    assert response.status_code == 200
    assert b"".join(response.streaming_content).decode("utf-8-sig").count("\r\n") == 12_001
    assert client.get(reverse("admin:reporting_reportrun_attachment", args=[run.pk, first.pk])).status_code == 404


def test_a_recipients_link_serves_their_file_and_not_the_runs_of_the_same_name(big_report, limit, client):
    limit(1 * MB)
    run = run_for(big_report)
    run_file = run.attachments.get()
    part = RunPart.objects.create(run=run, address="ann@example.com", recipient_email="ann@example.com", key="C1")
    theirs = RunAttachment.objects.create(
        run=run, part=part, filename=run_file.filename, mimetype="text/csv", size=3,
        file=ContentFile(b"a\r\n", name=run_file.filename),
    )  # fmt: skip
    [link] = attachments.links_to_files(run.pk, part.pk)(
        [render.Attachment(theirs.filename, b"x" * 2 * MB, "text/csv")]
    )
    client.force_login(factories.staff_user("vic", "view_reportrun"))

    response = client.get(urlsplit(link["url"]).path)

    assert link["url"] == SITE + f"/admin/reporting/reportrun/{run.pk}/parts/{part.pk}/files/{run_file.filename}"
    assert b"".join(response.streaming_content) == b"a\r\n"
    assert client.get(f"/admin/reporting/reportrun/{run.pk}/parts/{part.pk}/files/other.csv").status_code == 404


def test_a_file_address_typed_by_hand_serves_only_a_file_archived_under_that_run_and_name(big_report, limit, client):
    limit(1 * MB)
    run, other = run_for(big_report), run_for(big_report, date(2026, 11, 19))
    part = RunPart.objects.create(run=other, address="ann@example.com", recipient_email="ann@example.com", key="C1")
    name = run.attachments.get().filename
    client.force_login(factories.staff_user("vic", "view_reportrun"))
    base = "/admin/reporting/reportrun"

    assert client.get(f"{base}/{run.pk}/files/{name}").status_code == 200
    assert client.get(f"{base}/{run.pk}/files/data.json").status_code == 404  # the snapshot: not a file of the email
    # No route takes a "/" in a name: the admin's own pages answer, never a file.
    climbing = client.get(f"{base}/{run.pk}/files/..%2F{run.pk}%2Fdata.json", follow=True)
    assert not climbing.streaming and "Content-Disposition" not in climbing
    assert client.get(f"{base}/{other.pk}/files/{name}").status_code == 404  # that run's file has its own date
    assert client.get(f"{base}/{run.pk}/parts/{part.pk}/files/{name}").status_code == 404  # a part of another run


def test_a_pdf_that_takes_the_files_over_the_limit_is_linked_in_an_email_rendered_again(
    report, limit, use_smtp, monkeypatch
):
    pytest.importorskip("weasyprint")
    Report.objects.filter(pk=report.pk).update(attach_pdf=True)
    csv_size = encoded(run_for(report, date(2026, 11, 18)).attachments.get(mimetype="text/csv").size)
    limit(csv_size + 1_000)  # the CSV fits; with the PDF, the files do not

    run = run_for(report)

    pdf_file = run.attachments.get(mimetype="application/pdf")
    assert pdf_file.linked and not run.attachments.get(mimetype="text/csv").linked
    url = SITE + reverse("admin:reporting_reportrun_file", args=[run.pk, pdf_file.filename])
    assert f'<a href="{url}"' in run.body_html and url in run.body_text
    message = use_smtp.messages_to("ann@example.com")[-1]
    assert [each.get_filename() for each in message.iter_attachments()] == ["portfolio_2026-11-20.csv"]
