import email
import email.policy
import re
from pathlib import Path

import pytest
from anymail.backends.test import EmailBackend as AnymailTestBackend
from anymail.exceptions import AnymailAPIError
from anymail.message import AnymailRecipientStatus
from django.core import mail
from django.core.mail import get_connection

from reporting.mail import EmlFileBackend
from reporting.pipeline import deliver
from reporting.pipeline.deliver import DeliveryError, OutgoingEmail, SendResult
from reporting.pipeline.render import Attachment, rows_to_csv

ADDRESSES = ["ana@example.com", "bob@example.org", "cy@example.net"]
CSV = rows_to_csv([{"instrument": 'Café Müller, "AG"', "value": 1250.5}, {"instrument": "Apple", "value": None}])
EMAIL = OutgoingEmail(
    subject="Positions — May 2026",
    html="<h1>Positions</h1><p>Total: <b>1,349.50</b></p>",
    text="Positions\nTotal: 1,349.50\n",
    attachments=[Attachment("positions_2026-05-01_2026-05-31.csv", CSV, "text/csv")],
)


def send_each(addresses: list[str], message: OutgoingEmail = EMAIL) -> list[SendResult]:
    with deliver.connection() as backend:
        return [deliver.send(message, address, backend=backend) for address in addresses]


def delivery_error(address: str, *, backend) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        deliver.send(EMAIL, address, backend=backend)
    return caught.value


def text_of(message: email.message.EmailMessage, subtype: str) -> str:
    """The body part as text, with SMTP's CRLF line ends back to LF."""
    return message.get_body((subtype,)).get_content().replace("\r\n", "\n")


# --- SMTP -----------------------------------------------------------------------------


def test_it_sends_one_message_per_address_over_one_connection(use_smtp):
    send_each(ADDRESSES)

    assert use_smtp.connections == 1
    assert len(use_smtp.messages) == 3
    for address in ADDRESSES:
        [message] = use_smtp.messages_to(address)
        assert use_smtp.recipients_of(message) == [address]


def test_it_shows_each_recipient_only_their_own_address(use_smtp):
    send_each(ADDRESSES)

    for address in ADDRESSES:
        [message] = use_smtp.messages_to(address)
        assert message["To"] == address
        assert message["Cc"] is None and message["Bcc"] is None
        others = [other for other in ADDRESSES if other != address]
        assert not any(other in message.as_string() for other in others)


def test_it_delivers_subject_text_html_and_attachment_intact(use_smtp):
    send_each(["ana@example.com"])

    [message] = use_smtp.messages
    assert message["Subject"] == "Positions — May 2026"
    assert message["From"] == "Scheduled Reports <reports@localhost>"
    assert text_of(message, "plain") == "Positions\nTotal: 1,349.50\n"
    assert text_of(message, "html").strip() == "<h1>Positions</h1><p>Total: <b>1,349.50</b></p>"
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "positions_2026-05-01_2026-05-31.csv"
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_payload(decode=True) == CSV


def test_it_shows_a_chart_inside_the_html_by_content_id(use_smtp):
    png = b"\x89PNG\r\n\x1a\n" + b"chart bytes"
    with_chart = OutgoingEmail(
        subject="Positions",
        html='<p>Value</p><img src="cid:chart-1.png" alt="Value">',
        text="Value",
        attachments=[*EMAIL.attachments, Attachment("chart-1.png", png, "image/png", content_id="chart-1.png")],
    )
    send_each(["ana@example.com"], with_chart)

    [message] = use_smtp.messages
    html = text_of(message, "html")
    parts = {part.get_filename(): part for part in message.walk() if part.get_filename()}
    image = parts["chart-1.png"]
    assert image.get_content_type() == "image/png" and image.get_payload(decode=True) == png
    assert image["Content-Disposition"].startswith("inline")
    content_id = image["Content-ID"].strip("<>")
    assert f'src="cid:{content_id}"' in html and "cid:chart-1.png" not in html
    assert parts["positions_2026-05-01_2026-05-31.csv"]["Content-Disposition"].startswith("attachment")


def test_it_sets_reply_to_and_from_when_given(use_smtp):
    send_each(["ana@example.com"], OutgoingEmail(
        subject="S", html="<p>h</p>", text="t", attachments=[],
        from_email="Finance <finance@example.com>", reply_to="desk@example.com",
    ))  # fmt: skip

    [message] = use_smtp.messages
    assert message["From"] == "Finance <finance@example.com>"
    assert message["Reply-To"] == "desk@example.com"
    assert list(message.iter_attachments()) == []


def test_it_sets_and_returns_a_distinct_message_id_per_message(use_smtp):
    results = send_each(ADDRESSES)

    for address, result in zip(ADDRESSES, results, strict=True):
        [message] = use_smtp.messages_to(address)
        assert result.message_id == message["Message-ID"]
        assert result.message_id.startswith("<") and result.message_id.endswith("@localhost>")
        assert result.esp_status == ""
    assert len({result.message_id for result in results}) == 3


def test_it_fails_permanently_when_the_server_refuses_an_address(use_smtp):
    use_smtp.refuse("gone@example.com", code=550, message="No such user")

    with deliver.connection() as backend:
        error = delivery_error("gone@example.com", backend=backend)
        deliver.send(EMAIL, "ana@example.com", backend=backend)  # the connection is still good

    assert error.permanent is True
    assert error.message == "The mail server permanently refused the message (550 No such user)."
    assert use_smtp.messages_to("gone@example.com") == []
    assert len(use_smtp.messages_to("ana@example.com")) == 1
    assert use_smtp.connections == 1


def test_it_fails_transiently_when_the_server_refuses_an_address_for_now(use_smtp):
    use_smtp.refuse("busy@example.com", code=451, message="Try again later")

    with deliver.connection() as backend:
        error = delivery_error("busy@example.com", backend=backend)

    assert error.permanent is False
    assert error.message == "The mail server temporarily refused the message (451 Try again later)."
    assert use_smtp.messages == []


def test_it_fails_transiently_when_the_server_is_down(use_smtp):
    use_smtp.stop()

    error = delivery_error("ana@example.com", backend=get_connection())

    assert error.permanent is False
    assert error.message.startswith("The mail server could not be reached: ")


def test_it_fails_transiently_when_the_server_is_down_before_connecting(use_smtp):
    use_smtp.stop()

    with pytest.raises(DeliveryError) as caught:
        send_each(["ana@example.com"])

    assert caught.value.permanent is False


def test_it_fails_transiently_when_the_server_is_too_slow(use_smtp, settings):
    settings.EMAIL_TIMEOUT = 0.3
    use_smtp.delay = 1.0

    with deliver.connection() as backend:
        error = delivery_error("ana@example.com", backend=backend)

    assert error.permanent is False
    assert "could not be reached" in error.message


# --- anymail ----------------------------------------------------------------------------


class StringIdTestBackend(AnymailTestBackend):
    """Anymail's test backend, with message ids shaped like a real ESP's."""

    def get_esp_message_id(self, message):
        return f"esp-{mail.outbox.index(message) + 1:04d}"


class RejectingTestBackend(AnymailTestBackend):
    """Anymail's test backend where the ESP rejects every recipient."""

    def post_to_esp(self, payload, message):
        message.anymail_test_response = {
            "recipient_status": {
                address: AnymailRecipientStatus(message_id="esp-rejected", status="rejected")
                for address in payload.recipient_emails
            }
        }
        return super().post_to_esp(payload, message)


def test_it_returns_the_esps_message_id_and_status(settings):
    settings.EMAIL_BACKEND = "tests.test_deliver.StringIdTestBackend"

    results = send_each(ADDRESSES[:2])

    assert results == [SendResult("esp-0001", "sent"), SendResult("esp-0002", "sent")]
    assert [sent.anymail_test_params["to"][0].addr_spec for sent in mail.outbox] == ADDRESSES[:2]
    assert [sent.anymail_status.message_id for sent in mail.outbox] == ["esp-0001", "esp-0002"]


def test_it_hands_anymail_the_whole_message(settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"

    send_each(["ana@example.com"])

    [sent] = mail.outbox
    params = sent.anymail_test_params
    assert params["subject"] == "Positions — May 2026"
    assert params["text_body"] == "Positions\nTotal: 1,349.50\n"
    assert params["html_body"] == "<h1>Positions</h1><p>Total: <b>1,349.50</b></p>"
    assert [attachment.name for attachment in params["attachments"]] == ["positions_2026-05-01_2026-05-31.csv"]
    assert params["extra_headers"]["Message-ID"].endswith("@localhost>")


def test_it_returns_anymails_own_message_ids_as_text(settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"

    results = send_each(ADDRESSES[:2])

    assert [result.message_id for result in results] == ["0", "1"]


def test_it_fails_permanently_when_the_esp_rejects_the_address(settings):
    settings.EMAIL_BACKEND = "tests.test_deliver.RejectingTestBackend"

    with pytest.raises(DeliveryError) as caught:
        send_each(["ana@example.com"])

    assert caught.value.permanent is True
    assert "rejected" in caught.value.message


def test_it_fails_when_the_esp_rejects_the_address(settings):
    settings.EMAIL_BACKEND = "tests.test_deliver.RejectingTestBackend"

    with pytest.raises(DeliveryError) as caught:
        send_each(["ana@example.com"])

    assert "rejected" in caught.value.message


def test_it_fails_permanently_on_a_rejected_status_when_anymail_does_not_raise(settings):
    settings.ANYMAIL = {"IGNORE_RECIPIENT_STATUS": True}
    settings.EMAIL_BACKEND = "tests.test_deliver.RejectingTestBackend"

    with pytest.raises(DeliveryError) as caught:
        send_each(["ana@example.com"])

    assert caught.value.permanent is True
    assert caught.value.message == "The email service did not accept the message (status: rejected)."


def test_it_fails_transiently_when_the_esp_api_fails(settings):
    class FailingTestBackend(AnymailTestBackend):
        def post_to_esp(self, payload, message):
            message.anymail_test_response = AnymailAPIError("ESP is having a bad day")
            return super().post_to_esp(payload, message)

    with pytest.raises(DeliveryError) as caught:
        deliver.send(EMAIL, "ana@example.com", backend=FailingTestBackend())

    assert caught.value.permanent is False
    assert caught.value.message.startswith("The email service refused the message: ESP is having a bad day")


# --- the .eml file backend ------------------------------------------------------------


def test_it_writes_one_eml_file_per_message(settings):
    settings.EMAIL_BACKEND = "reporting.mail.EmlFileBackend"

    results = send_each(ADDRESSES)

    files = sorted(Path(settings.EMAIL_FILE_PATH).glob("*.eml"))
    assert len(files) == 3
    received = {}
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        received[message["To"]] = message
        assert message["To"] in path.name
    assert sorted(received) == sorted(ADDRESSES)
    for address, result in zip(ADDRESSES, results, strict=True):
        message = received[address]
        assert message["Subject"] == "Positions — May 2026"
        assert message["Message-ID"] == result.message_id
        [attachment] = message.iter_attachments()
        assert attachment.get_payload(decode=True) == CSV


def test_it_writes_eml_files_to_the_folder_it_is_given(tmp_path):
    folder = tmp_path / "elsewhere"

    sent = EmlFileBackend(file_path=str(folder)).send_messages([deliver.build_message(EMAIL, "ana@example.com")])

    assert sent == 1
    [path] = folder.glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert (message["To"], message["Subject"]) == ("ana@example.com", "Positions — May 2026")


def test_each_message_has_boundaries_of_its_own_that_no_part_holds(use_smtp):
    with_chart = OutgoingEmail(
        subject=EMAIL.subject,
        html=EMAIL.html + '<img src="cid:chart-1.png">' + "\n--===============" + "0" * 32 + "==\n",
        text=EMAIL.text,
        attachments=[
            *EMAIL.attachments,
            Attachment("chart-1.png", b"\x89PNG\r\n\x1a\n" + b"chart", "image/png", content_id="chart-1.png"),
        ],
    )
    send_each(ADDRESSES[:2], with_chart)

    boundaries = []
    for message in use_smtp.messages:
        multiparts = [part for part in message.walk() if part.is_multipart()]
        assert [part.get_content_type() for part in multiparts] == ["multipart/mixed", "multipart/alternative"]
        boundaries += [part.get_boundary() for part in multiparts]
        assert text_of(message, "plain") == EMAIL.text
        assert "--===============" + "0" * 32 + "==" in text_of(message, "html")  # a look-alike, kept as content
        files = {part.get_filename(): part.get_payload(decode=True) for part in message.walk() if part.get_filename()}
        assert files["positions_2026-05-01_2026-05-31.csv"] == CSV
        assert files["chart-1.png"] == b"\x89PNG\r\n\x1a\nchart"
    assert all(re.fullmatch(r"={15}[0-9a-f]{32}==", boundary) for boundary in boundaries)
    assert len(set(boundaries)) == len(boundaries) >= 4  # none shared within a message or between two
