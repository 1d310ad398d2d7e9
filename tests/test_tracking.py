"""ESP tracking webhooks (through django-anymail) update the deliveries in the archive."""

import base64

import pytest
from django.urls import reverse

from reporting import runs
from reporting.models import Delivery
from tests import factories

pytestmark = pytest.mark.django_db
SECRET = "hook:s3cret"


@pytest.fixture
def delivery(httpserver, settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.ANYMAIL = {"WEBHOOK_SECRET": SECRET}
    httpserver.expect_request("/api/positions").respond_with_json(factories.POSITIONS)
    report = factories.report(factories.data_source(httpserver.url_for("/api/")), addresses=["ann@example.com"])
    run = runs.execute_run(run_id=runs.create_manual_run(report_id=report.pk, period_day=None, requested_by_id=None).pk)
    return run.deliveries.get()


def post_event(client, event, *, auth=SECRET):
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return client.post(reverse("anymail:postmark_tracking_webhook"), event, content_type="application/json", **headers)


def test_a_delivered_event_marks_the_delivery_delivered(client, delivery):
    event = {"RecordType": "Delivery", "MessageID": delivery.message_id, "Recipient": "ann@example.com"}

    assert post_event(client, event).status_code == 200

    delivery.refresh_from_db()
    assert (delivery.status, delivery.esp_status) == (Delivery.Status.DELIVERED, "delivered")


def test_a_bounce_marks_the_delivery_bounced_with_the_reason(client, delivery):
    event = {
        "RecordType": "Bounce",
        "ID": 7,
        "Type": "HardBounce",
        "MessageID": delivery.message_id,
        "Email": "ann@example.com",
        "Description": "Mailbox not found.",
    }

    post_event(client, event)

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.BOUNCED
    assert delivery.error == "Mailbox not found."


def test_a_webhook_without_the_secret_is_refused_and_changes_nothing(client, delivery):
    event = {"RecordType": "Delivery", "MessageID": delivery.message_id, "Recipient": "ann@example.com"}

    assert post_event(client, event, auth="").status_code == 400
    assert post_event(client, event, auth="hook:wrong").status_code == 400

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT


def test_an_event_for_an_unknown_message_changes_nothing(client, delivery):
    event = {"RecordType": "Delivery", "MessageID": "not-ours", "Recipient": "ann@example.com"}

    assert post_event(client, event).status_code == 200

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
