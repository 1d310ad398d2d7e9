"""A recipient's attributes in the admin: "name = value" lines, their errors in words, the list, the search;
and the recipient's page listing what they received."""

import re

import pytest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from reporting import recipient_history
from reporting.models import Delivery, Recipient, ReportRun, RunPart
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("permission_groups")]
ADD = reverse("admin:reporting_recipient_add")
CHANGELIST = reverse("admin:reporting_recipient_changelist")


def change_url(recipient: Recipient) -> str:
    return reverse("admin:reporting_recipient_change", args=[recipient.pk])


def textarea(page: str) -> str:
    return re.search(r'<textarea name="attributes"[^>]*>(.*?)</textarea>', page, re.DOTALL).group(1).strip()


def test_it_saves_name_value_lines_as_attributes_and_shows_them_back_as_lines(staff_client):
    lines = "client_id = C001\n\n currency=EUR \n"
    response = staff_client.post(ADD, {"email": "ann@example.com", "name": "Ann", "active": "on", "attributes": lines})

    assert response.status_code == 302
    ann = Recipient.objects.get(email="ann@example.com")
    assert ann.attributes == {"client_id": "C001", "currency": "EUR"}
    page = staff_client.get(change_url(ann)).content.decode()
    assert textarea(page) == "client_id = C001\ncurrency = EUR"


def test_a_value_may_hold_an_equals_sign_after_the_first(staff_client):
    staff_client.post(ADD, {"email": "ann@example.com", "active": "on", "attributes": "filter = a=b"})

    assert Recipient.objects.get().attributes == {"filter": "a=b"}


def test_changing_the_lines_replaces_the_attributes(staff_client):
    ann = Recipient.objects.create(email="ann@example.com", attributes={"client_id": "C001", "old": "x"})

    staff_client.post(change_url(ann), {"email": ann.email, "active": "on", "attributes": "client_id = C002"})

    ann.refresh_from_db()
    assert ann.attributes == {"client_id": "C002"}


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ("client_id C001", "Line 1 (&#x27;client_id C001&#x27;): write one attribute per line as name = value."),
        ("client_id = C001\nclient_id = C002", "Line 2: &#x27;client_id&#x27; is already set on line 1; give it once."),
        ("currency =", "Line 1: &#x27;currency&#x27; has no value: give one, or remove the line."),
        ("= EUR", "Line 1 (&#x27;= EUR&#x27;): write one attribute per line as name = value."),
        ("1st = x", "&#x27;1st&#x27; is not an attribute name"),
        ("email = x@example.com", "&#x27;email&#x27; is the recipient&#x27;s own field, not an attribute"),
        ("note = " + "x" * 501, "The value of &#x27;note&#x27; is longer than 500 characters."),
    ],
)
def test_it_refuses_bad_lines_in_words_and_saves_nothing(staff_client, lines, problem):
    response = staff_client.post(ADD, {"email": "ann@example.com", "active": "on", "attributes": lines})

    assert response.status_code == 200
    assert problem in response.content.decode()
    assert Recipient.objects.count() == 0


def test_the_list_shows_the_attributes_briefly(staff_client):
    Recipient.objects.create(email="ann@example.com", attributes={"currency": "EUR", "client_id": "C001"})

    page = staff_client.get(CHANGELIST).content.decode()

    assert "client_id=C001, currency=EUR" in page


def test_the_search_finds_a_recipient_by_an_attribute_value_on_any_database(staff_client):
    Recipient.objects.create(email="ann@example.com", attributes={"client_id": "C001"})
    Recipient.objects.create(email="bob@example.com", attributes={"client_id": "C002"})
    Recipient.objects.create(email="cy@example.com", name="Cy c001")

    found = staff_client.get(CHANGELIST, {"q": "c001"}).context["cl"].result_list
    by_email = staff_client.get(CHANGELIST, {"q": "bob@"}).context["cl"].result_list

    assert sorted(recipient.email for recipient in found) == ["ann@example.com", "cy@example.com"]
    assert [recipient.email for recipient in by_email] == ["bob@example.com"]


# --- what a recipient received ---------------------------------------------------------------------------------


@pytest.fixture
def received(report):
    """For ann@example.com: a run's email (original and resend), and her own report within a per-recipient run."""
    ann = Recipient.objects.get(email="ann@example.com")
    now = timezone.now()

    def run(key: str) -> ReportRun:
        return ReportRun.objects.create(
            report=report,
            period_start=now.date(),
            period_end=now.date(),
            period_key=key,
            period_label=f"label {key}",
            trigger=ReportRun.Trigger.MANUAL,
            status=ReportRun.Status.SENT,
        )

    emailed, split = run("emailed"), run("split")
    Delivery.objects.create(run=emailed, address="ANN@example.com", status=Delivery.Status.SENT, sent_at=now)
    Delivery.objects.create(run=emailed, address="ann@example.com", kind=Delivery.Kind.RESEND, status="sent")
    Delivery.objects.create(run=emailed, address="bob@example.com", status=Delivery.Status.SENT, sent_at=now)
    part = RunPart.objects.create(
        run=split, recipient=ann, address=ann.email, recipient_email=ann.email, status=RunPart.Status.SENT
    )
    RunPart.objects.create(run=split, address="bob@example.com", recipient_email="bob@example.com")
    return ann, emailed, split, part


def received_section(page: str) -> str:
    match = re.search(r'<fieldset class="module" id="received">(.*?)</fieldset>', page, re.DOTALL)
    return match.group(1) if match else ""


def test_the_recipient_page_lists_each_email_and_own_report_they_received_with_links(staff_client, received):
    ann, emailed, split, part = received

    section = received_section(staff_client.get(change_url(ann)).content.decode())

    rows = re.findall(r"<tr>(.*?)</tr>", section, re.DOTALL)[1:]
    assert len(rows) == 3  # two emails of one run, her own report of the other; nothing of bob's
    assert "bob@example.com" not in section
    assert section.count(f'href="{emailed.get_absolute_url()}"') == 2
    assert section.count(f'href="{split.get_absolute_url()}"') == 1
    assert "label emailed" in section and "label split" in section and "Resent email" in section
    try:
        assert f'href="{part.get_absolute_url()}"' in section
    except NoReverseMatch:  # the recipient reports' own admin pages are not on this branch
        assert "Own report" in section
    archive = reverse("admin:reporting_reportrun_changelist") + "?q=ann%40example.com"
    assert f'href="{archive}"' in section


def test_the_recipient_page_shows_nothing_received_to_staff_who_may_not_see_runs(client, received):
    ann = received[0]
    client.force_login(factories.staff_user("ed", "view_recipient", "change_recipient"))

    page = client.get(change_url(ann)).content.decode()

    assert "ann@example.com" in page
    assert received_section(page) == "" and "label emailed" not in page


def test_the_recipient_page_shows_at_most_the_latest_and_says_so(received):
    rows, more = recipient_history.received_by(received[0], limit=2)

    assert (len(rows), more) == (2, True)
