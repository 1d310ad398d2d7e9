"""Addresses are checked before the first email leaves: invalid ones are refused in words, duplicates sent once."""

import pytest
from django.urls import reverse

from reporting import runs
from reporting.models import Delivery, ReportRun
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]
INJECTED = "eve@example.com\nBcc: spy@evil.example"


def run_for(report, addresses: list[str]) -> ReportRun:
    run = runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None)
    ReportRun.objects.filter(pk=run.pk).update(recipients=addresses)
    return run


def test_invalid_addresses_fail_before_any_send_and_valid_ones_are_sent_once(report, use_smtp):
    run = run_for(report, ["ann@example.com", "ANN@Example.com", "not an address", INJECTED, "bob@example.com"])

    run = runs.execute_run(run_id=run.pk)

    assert sorted(address for m in use_smtp.messages for address in use_smtp.recipients_of(m)) == [
        "ann@example.com",
        "bob@example.com",
    ]
    assert all("spy@evil.example" not in str(m) for m in use_smtp.messages)
    outcomes = {d.address: (d.status, d.error) for d in run.deliveries.all()}
    assert outcomes == {
        "ann@example.com": ("sent", ""),
        "bob@example.com": ("sent", ""),
        "not an address": ("failed", "Not a valid email address; nothing was sent to it."),
        INJECTED: (
            "failed",
            "Not a valid email address (it contains a line break or another control character); "
            "nothing was sent to it.",
        ),
    }
    assert run.status == ReportRun.Status.PARTIALLY_SENT
    assert run.error.startswith("2 of 4 addresses did not get the email: not an address: Not a valid email address")


def test_a_run_without_one_valid_address_fails_in_words_before_fetching(report, httpserver, use_smtp):
    run = run_for(report, ["not an address", INJECTED])

    run = runs.execute_run(run_id=run.pk)

    assert run.status == ReportRun.Status.FAILED
    assert run.error == (
        "None of the run's addresses is a valid email address "
        "(not an address, 'eve@example.com\\nBcc: spy@evil.example'): nothing was sent."
    )
    assert httpserver.log == []
    assert use_smtp.messages == []
    assert run.deliveries.count() == 0


def test_a_run_without_recipients_fails_in_words(report, use_smtp):
    run = runs.execute_run(run_id=run_for(report, []).pk)

    assert run.status == ReportRun.Status.FAILED
    assert run.error == "The report has no active recipients: add a recipient or a recipient list."
    assert use_smtp.messages == []


def test_a_resumed_run_does_not_send_a_case_variant_twice(report, use_smtp):
    run = run_for(report, ["ann@example.com", "Ann@example.com"])
    Delivery.objects.create(run=run, address="ann@example.com", status=Delivery.Status.SENT)

    runs.execute_run(run_id=run.pk)

    assert use_smtp.messages == []
    assert list(run.deliveries.values_list("address", flat=True)) == ["ann@example.com"]


# --- on the forms ------------------------------------------------------------------------------------


def test_run_now_explains_that_a_report_has_no_active_recipients(staff_client, source, mailoutbox):
    report = factories.report(source, addresses=["gone@example.com"])
    report.recipients.update(active=False)

    page = staff_client.post(reverse("admin:reporting_report_run_now", args=[report.pk]), {"confirm": "yes"})

    assert page.status_code == 200
    assert "No active recipients: Portfolio. Add a recipient or a recipient list first." in page.content.decode()
    assert ReportRun.objects.count() == 0


def test_send_test_explains_an_invalid_own_address(client, django_user_model, report, mailoutbox):
    user = django_user_model.objects.create_superuser("kim", "kim@example.com", "pw")
    django_user_model.objects.filter(pk=user.pk).update(email="kim@@example.com")
    client.force_login(user)

    page = client.post(reverse("admin:reporting_report_send_test", args=[report.pk]), {"confirm": "yes"})

    assert "Your email address (kim@@example.com) is not valid" in page.content.decode()
    assert ReportRun.objects.count() == 0
    assert mailoutbox == []


def sent_run(report) -> ReportRun:
    return runs.execute_run(run_id=run_for(report, ["ann@example.com"]).pk)


def test_resend_refuses_an_invalid_address_in_words_and_sends_nothing(staff_client, report, mailoutbox):
    run = sent_run(report)
    mailoutbox.clear()

    page = staff_client.post(
        reverse("admin:reporting_reportrun_resend", args=[run.pk]),
        {"step": "send", "target": "typed", "addresses": "eve@example.com, eve@@example.com"},
    )

    assert page.status_code == 200
    assert "Not a valid email address: eve@@example.com." in page.content.decode()
    assert run.deliveries.filter(kind=Delivery.Kind.RESEND).count() == 0
    assert mailoutbox == []


def test_resend_sends_a_duplicated_address_once(staff_client, report, mailoutbox, django_capture_on_commit_callbacks):
    run = sent_run(report)
    mailoutbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(
            reverse("admin:reporting_reportrun_resend", args=[run.pk]),
            {"step": "send", "target": "typed", "addresses": "eve@example.com\nEVE@example.com, eve@example.com"},
        )

    assert [m.to for m in mailoutbox] == [["eve@example.com"]]
    assert list(run.deliveries.filter(kind=Delivery.Kind.RESEND).values_list("address", flat=True)) == [
        "eve@example.com"
    ]
