"""Outgoing: a run's message to a Slack channel, a Microsoft Teams channel or a signed webhook.

Plain values in, plain values out: the caller passes a `Target` (the secrets read from the
environment), the payload to send and, for Slack, the files; it gets the service's answer as a
dict, or an `OutgoingError` in words. What may pass (HTTP 429, honouring Retry-After; 5xx; a
connection that failed or timed out) is retried in this call with bounded exponential backoff,
each request on its own: a Slack message already posted is not posted again because a file
upload after it had to wait. Nothing here names a secret: errors say the host, never the URL,
and whatever a service echoes back is redacted.

Teams and webhook URLs are posted to only when their host is in
REPORTING_ALLOWED_DESTINATION_HOSTS, and the address connected to is checked on the open socket
as a data source's is (`fetch.guarded_session`). Slack's API is the setting REPORTING_SLACK_API_URL,
the operator's, and the upload URLs are those Slack's API hands out.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.error import URLError
from urllib.parse import urlsplit

import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from reporting import conf
from reporting.pipeline import fetch

SLACK, TEAMS, WEBHOOK = "slack", "teams", "webhook"
DESTINATION_HOSTS_SETTING = "REPORTING_ALLOWED_DESTINATION_HOSTS"
USER_AGENT = fetch.USER_AGENT
ANSWER_TEXT_CHARS = 500  # of a service's answer body, kept with the delivery
_READ_AT_MOST = 64 * 1024  # of a service's answer body, read at all
# The webhook's own headers: the receiver checks the signature over "<timestamp>.<body>".
TIMESTAMP_HEADER, SIGNATURE_HEADER, DELIVERY_HEADER = "X-Report-Timestamp", "X-Report-Signature", "X-Report-Delivery"
T = TypeVar("T")


def wait(seconds: float) -> None:
    """How a retry waits: time.sleep, replaced in tests to record the delays instead."""
    time.sleep(seconds)


class OutgoingError(Exception):
    """The message could not be delivered; `permanent` says retrying will not help.

    `answer` holds what is known of the service's answer (status, what was done before the failure).
    """

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.status = status
        self.answer: dict[str, Any] = {}


# --- what is sent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    """An archived file of the run: linked from a webhook's payload, uploaded to Slack."""

    filename: str
    size: int
    url: str


@dataclass(frozen=True)
class Message:
    """What every destination is told of a run: the webhook payload's fields."""

    report: dict[str, Any]  # id, name, slug
    period: dict[str, str]  # start, end (ISO dates), label
    headline: list[dict[str, str]]  # label, text: the layout's headline figures as the email shows them
    row_count: int | None
    run: dict[str, Any]  # id, url (the archived run's admin page)
    files: list[File] = field(default_factory=list)


def webhook_payload(message: Message) -> dict[str, Any]:
    """The documented JSON of a webhook (README, "Webhook payload")."""
    return {
        "report": message.report,
        "period": message.period,
        "headline": message.headline,
        "row_count": message.row_count,
        "run": message.run,
        "files": [{"filename": file.filename, "size": file.size, "url": file.url} for file in message.files],
    }


def slack_payload(message: Message, *, channel: str) -> dict[str, Any]:
    """chat.postMessage's arguments: the headline figures as fields, a link to the run; the files to upload after."""
    title = f"*{_slack_text(message.report['name'])}* — {_slack_text(message.period['label'])}"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": title}}]
    figures = [
        {"type": "mrkdwn", "text": f"*{_slack_text(figure['label'])}*\n{_slack_text(figure['text'])}"}
        for figure in message.headline
    ]
    for start in range(0, len(figures), 10):  # Slack takes at most 10 fields in a section
        blocks.append({"type": "section", "fields": figures[start : start + 10]})
    rows = "" if message.row_count is None else f"{message.row_count:,} rows · "
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"{rows}<{message.run['url']}|The archived run #{message.run['id']}>"}
            ],
        }
    )
    lines = [f"{message.report['name']} — {message.period['label']}"]
    lines += [f"{figure['label']}: {figure['text']}" for figure in message.headline]
    return {
        "channel": channel,
        "text": _slack_text("\n".join(lines)),  # the notification's text, and what clients without blocks show
        "blocks": blocks,
        "files": [file.filename for file in message.files],
    }


def _slack_text(text: str) -> str:
    """Text for Slack's mrkdwn: &, < and > escaped, so that data cannot mention @channel or forge a link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def teams_payload(message: Message) -> dict[str, Any]:
    """A Workflows webhook's message: an Adaptive Card with the headline figures and a link to the archived run."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": True, "text": message.report["name"]},
        {"type": "TextBlock", "spacing": "None", "isSubtle": True, "wrap": True, "text": message.period["label"]},
    ]
    if message.headline:
        facts = [{"title": figure["label"], "value": figure["text"]} for figure in message.headline]
        body.append({"type": "FactSet", "facts": facts})
    if message.row_count is not None:
        body.append({"type": "TextBlock", "isSubtle": True, "wrap": True, "text": f"{message.row_count:,} rows"})
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": [{"type": "Action.OpenUrl", "title": "Open the archived run", "url": message.run["url"]}],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def payload_for(kind: str, message: Message, *, channel: str = "") -> dict[str, Any]:
    if kind == SLACK:
        return slack_payload(message, channel=channel)
    if kind == TEAMS:
        return teams_payload(message)
    return webhook_payload(message)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """X-Report-Signature's value: "sha256=" and the hex HMAC-SHA256 of "<timestamp>.<body>" keyed by the secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes posted (and signed): compact JSON, UTF-8."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


# --- where it goes, and how hard to try -------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A destination with its secrets, read from the environment for one send and never kept."""

    kind: str
    secret: str  # Slack: the bot token; Teams and webhooks: the URL
    secret_env_var: str
    channel: str = ""  # Slack
    signing_secret: str = ""  # webhooks
    allowed_hosts: tuple[str, ...] | None = None  # None: REPORTING_ALLOWED_DESTINATION_HOSTS

    def secret_forms(self) -> list[str]:
        """Every form in which one of its secrets, or any other secret the workers hold (another destination's,
        a data source's), may come back in a text, to redact."""
        forms: set[str] = set(fetch.secret_forms_in_environment())
        for secret in (self.secret, self.signing_secret):
            forms.update(fetch.secret_forms(fetch.Auth(scheme="bearer"), secret))
        return sorted(forms, key=len, reverse=True)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_seconds: float = 2
    max_seconds: float = 30

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        config = conf.REPORTING
        return cls(
            attempts=config.get("DESTINATION_MAX_ATTEMPTS", 4),
            base_seconds=config.get("DESTINATION_RETRY_BASE_SECONDS", 2),
            max_seconds=config.get("DESTINATION_RETRY_MAX_SECONDS", 30),
        )

    @property
    def budget_seconds(self) -> float:
        """The most one delivery waits in all, however many requests it makes (Slack makes several)."""
        return self.max_seconds * (self.attempts - 1)

    def wait_before_retry(self, retries: int, retry_after: float | None) -> float | None:
        """Exponential backoff with full jitter, at least the server's Retry-After; None when it asks for too long."""
        if retry_after is not None and retry_after > self.max_seconds:
            return None
        backoff = random.uniform(self.base_seconds, min(self.max_seconds, self.base_seconds * 2**retries))
        return min(self.max_seconds, max(backoff, retry_after or 0))


@dataclass
class Attempts:
    """Tries one request at a time until it is answered, waiting between them by the policy.

    `on_wait` is called before each wait (the worker renews its lease there); `waited` records
    each wait, kept in the delivery's answer.
    """

    policy: RetryPolicy
    sleep: Callable[[float], None] | None = None  # None: this module's `wait`, looked up when waiting
    on_wait: Callable[[], None] | None = None
    waited: list[dict[str, Any]] = field(default_factory=list)

    def run(self, what: str, request: Callable[[], T]) -> T:
        for attempt in range(1, self.policy.attempts + 1):
            try:
                return request()
            except OutgoingError as exc:
                if exc.permanent:
                    raise
                if attempt == self.policy.attempts:
                    exc.message = f"{exc.message} Gave up after {attempt} tries."
                    exc.permanent = True
                    raise
                seconds = self.policy.wait_before_retry(attempt - 1, exc.retry_after)
                if seconds is None:
                    exc.message = (
                        f"{exc.message} It asked to be tried again in {exc.retry_after:g} seconds, longer than "
                        f"REPORTING_DESTINATION_RETRY_MAX_SECONDS ({self.policy.max_seconds:g}); given up."
                    )
                    exc.permanent = True
                    raise
                if sum(each["seconds"] for each in self.waited) + seconds > self.policy.budget_seconds:
                    exc.message = (
                        f"{exc.message} Given up: waiting again would take this delivery past "
                        f"{self.policy.budget_seconds:g} seconds of waiting in all."
                    )
                    exc.permanent = True
                    raise
                self.waited.append({"request": what, "status": exc.status, "error": exc.message, "seconds": seconds})
                if self.on_wait is not None:
                    self.on_wait()
                (self.sleep or wait)(seconds)
        raise AssertionError("unreachable")  # pragma: no cover


def target_from_environment(
    *, kind: str, secret_env_var: str, channel: str = "", signing_secret_env_var: str = ""
) -> Target:
    """The destination's secrets from the environment variables it names; OutgoingError in words when one
    may not be read (the data sources' rule) or is not set. Nothing is sent then."""
    what = "bot token" if kind == SLACK else "URL"
    secret = _read_secret(secret_env_var, what)
    signing_secret = _read_secret(signing_secret_env_var, "signing secret") if kind == WEBHOOK else ""
    return Target(
        kind=kind, secret=secret, secret_env_var=secret_env_var, channel=channel, signing_secret=signing_secret
    )


def _read_secret(name: str, what: str) -> str:
    problem = fetch.secret_variable_problem(name)
    if problem:  # checked on the form too: this catches a destination saved around it
        problem = problem.replace("a data source's secret", "a destination's secret")
        raise OutgoingError(f"{problem} Nothing was sent.", permanent=True)
    # Surrounding whitespace is dropped: secrets read from files often end in a newline.
    secret = os.environ.get(name, "").strip() if name else ""
    if not secret:
        raise OutgoingError(
            f"The destination's {what} is missing: the environment variable '{name or '(none named)'}' is not set "
            "on the worker. Nothing was sent.",
            permanent=True,
        )
    if any(not character.isprintable() for character in secret):
        raise OutgoingError(
            f"The {what} in the environment variable '{name}' contains a line break or another control character. "
            "Nothing was sent.",
            permanent=True,
        )
    return secret


# --- sending ------------------------------------------------------------------------------------


def send(
    target: Target,
    payload: dict[str, Any],
    *,
    delivery_id: int,
    files: Sequence[tuple[str, bytes]] = (),
    attempts: Attempts,
    done: dict[str, Any] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Deliver `payload` to `target`; the service's answer, or OutgoingError in words (never with a secret).

    `files` are (filename, bytes) uploaded to Slack. `done` is what an earlier call already did for
    this delivery (Slack's message ts), and `on_progress` is told each step as it is done.
    """
    forms = target.secret_forms()
    answer = dict(done or {})
    progress = (lambda so_far: on_progress(_redacted(so_far, forms))) if on_progress is not None else None
    try:
        if target.kind == SLACK:
            _send_to_slack(target, payload, files, attempts, answer, progress)
        else:
            _post_json(target, payload, delivery_id, attempts, answer)
    except OutgoingError as exc:
        exc.message = fetch.redact(exc.message, forms)
        answer.update(exc.answer)
        if attempts.waited:
            answer["waited"] = attempts.waited
        exc.answer = _redacted(answer, forms)
        raise
    if attempts.waited:
        answer["waited"] = attempts.waited
    return _redacted(answer, forms)


def _redacted(answer: dict[str, Any], forms: list[str]) -> dict[str, Any]:
    return json.loads(fetch.redact(json.dumps(answer), [json.dumps(form)[1:-1] for form in forms]))


# --- Teams and webhooks: one POST of JSON ---------------------------------------------------------


def _post_json(target: Target, payload: dict[str, Any], delivery_id: int, attempts: Attempts, answer: dict) -> None:
    url = target.secret
    host = _check_url(url, target)
    try:
        allowlist = fetch.HostAllowlist.from_entries(_allowed_entries(target), setting=DESTINATION_HOSTS_SETTING)
    except fetch.FetchError as exc:  # a malformed entry, named
        raise OutgoingError(exc.message, permanent=True) from None
    if not allowlist.allows_host(host):
        raise _not_allowed(host, allowlist)
    body = webhook_body(payload)
    timeout = conf.REPORTING.get("DESTINATION_TIMEOUT_SECONDS", 30)
    with fetch.guarded_session(allowlist) as http:

        def post() -> dict[str, Any]:
            headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
            if target.kind == WEBHOOK:
                timestamp = str(int(time.time()))
                headers |= {
                    TIMESTAMP_HEADER: timestamp,
                    SIGNATURE_HEADER: signature(target.signing_secret, timestamp, body),
                    DELIVERY_HEADER: str(delivery_id),
                }
            return _http_post(http, url, body, headers, timeout, host)

        answer.update(attempts.run("POST", post))


def _check_url(url: str, target: Target) -> str:
    """The URL's host; OutgoingError in words (without the URL) when it is not a plain http(s) URL."""
    where = f"The URL in {target.secret_env_var}"
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        raise OutgoingError(f"{where} is not a valid URL.", permanent=True) from None
    if parts.scheme.lower() not in fetch.SCHEMES:
        raise OutgoingError(f"{where} must start with https:// (or http://).", permanent=True)
    if not host:
        raise OutgoingError(f"{where} has no host name.", permanent=True)
    return host


def _allowed_entries(target: Target) -> tuple[str, ...]:
    if target.allowed_hosts is not None:
        return target.allowed_hosts
    return tuple(conf.REPORTING.get("ALLOWED_DESTINATION_HOSTS", ()))


def _not_allowed(host: str, allowlist: fetch.HostAllowlist) -> OutgoingError:
    if not (allowlist.names or allowlist.domains or allowlist.networks):
        return OutgoingError(
            f"No destination host is allowed: set {DESTINATION_HOSTS_SETTING} to the hosts Teams and webhook "
            "destinations may post to. Nothing was sent.",
            permanent=True,
        )
    return OutgoingError(
        f"The destination's host {host} is not in {DESTINATION_HOSTS_SETTING}. Nothing was sent.", permanent=True
    )


def _http_post(
    http: requests.Session, url: str, body: bytes, headers: dict[str, str], timeout: float, host: str
) -> dict[str, Any]:
    """One POST: its answer (status, the body's start) when 2xx, else OutgoingError saying whether to retry."""
    try:
        response = http.post(
            url, data=body, headers=headers, timeout=(timeout, timeout), stream=True, allow_redirects=False
        )
    except fetch.FetchError as exc:  # the address connected to is refused
        raise OutgoingError(exc.message, permanent=True) from None
    except requests.Timeout:
        raise OutgoingError(f"{host} did not answer within {timeout:g} seconds.", permanent=False) from None
    except requests.ConnectionError:
        raise OutgoingError(f"Could not connect to {host}.", permanent=False) from None
    except requests.RequestException as exc:  # not `{exc}`: it may quote the URL
        raise OutgoingError(f"The request to {host} failed ({type(exc).__name__}).", permanent=True) from None
    with response:
        text = _read_some(response)
    status = response.status_code
    answer = {"status": status, "body": text[:ANSWER_TEXT_CHARS]}
    if 200 <= status < 300:
        return answer
    error = _status_error(host, status, response.reason, response.headers.get("Retry-After"))
    error.answer = answer
    raise error


def _read_some(response: requests.Response) -> str:
    try:
        content = response.raw.read(_READ_AT_MOST, decode_content=True)
    except Exception:  # an answer we cannot read is not worth a failure: the status says enough
        return ""
    return content.decode("utf-8", "replace")


def _status_error(service: str, status: int, reason: str, retry_after: str | None) -> OutgoingError:
    http_status = f"HTTP {status} {reason}".strip()
    if status == 429:
        message = f"{service} asked us to slow down ({http_status})."
        return OutgoingError(
            message, permanent=False, retry_after=fetch.retry_after_seconds(retry_after), status=status
        )
    if status >= 500 or status == 408:
        message = f"{service} is unavailable right now ({http_status})."
        return OutgoingError(
            message, permanent=False, retry_after=fetch.retry_after_seconds(retry_after), status=status
        )
    if 300 <= status < 400:
        return OutgoingError(
            f"{service} answered with a redirect ({http_status}), which is not followed: put the final URL in "
            "the environment variable.",
            permanent=True,
            status=status,
        )
    words = {
        400: "refused the message as malformed",
        401: "refused our credentials",
        403: "refused access",
        404: "has no such address (the URL may be out of date)",
        410: "says the address is gone (the webhook was deleted)",
        413: "refused the message as too large",
    }
    return OutgoingError(
        f"{service} {words.get(status, 'refused the message')} ({http_status}).", permanent=True, status=status
    )


# --- Slack: chat.postMessage, then file upload v2 for each file ---------------------------------------


SLACK_WORDS = {
    "invalid_auth": "Slack refused the bot token (invalid_auth): check the token in {var}.",
    "not_authed": "Slack got no bot token (not_authed): set {var} on the workers.",
    "token_revoked": "The bot token in {var} was revoked (token_revoked).",
    "token_expired": "The bot token in {var} has expired (token_expired).",
    "account_inactive": "The Slack app's account is inactive (account_inactive).",
    "channel_not_found": "Slack has no channel {channel} that the app can see (channel_not_found).",
    "not_in_channel": "The Slack app is not in channel {channel}: invite it (not_in_channel).",
    "is_archived": "The Slack channel {channel} is archived (is_archived).",
    "missing_scope": "The Slack app lacks a scope it needs (missing_scope): give it chat:write and files:write.",
    "msg_too_long": "Slack refused the message as too long (msg_too_long).",
    "invalid_blocks": "Slack refused the message's layout (invalid_blocks).",
}
SLACK_TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


def _send_to_slack(
    target: Target,
    payload: dict[str, Any],
    files: Sequence[tuple[str, bytes]],
    attempts: Attempts,
    answer: dict[str, Any],
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> None:
    base_url = conf.REPORTING.get("SLACK_API_URL", "https://slack.com/api/").rstrip("/") + "/"
    timeout = conf.REPORTING.get("DESTINATION_TIMEOUT_SECONDS", 30)
    # No retry handlers of the SDK's own: the retries here wait by the policy, renewing the lease.
    client = WebClient(token=target.secret, base_url=base_url, timeout=timeout, retry_handlers=[])
    channel = payload["channel"]
    if not answer.get("ts"):
        posted = attempts.run(
            "chat.postMessage",
            lambda: _slack(
                target,
                lambda: client.chat_postMessage(
                    channel=channel, text=payload["text"], blocks=payload["blocks"], unfurl_links=False
                ),
            ),
        )
        answer.update(status=posted.status_code, channel=posted.get("channel", channel), ts=posted.get("ts"))
        if on_progress is not None:
            on_progress(answer)
    if files and not answer.get("files"):
        try:
            answer["files"] = _upload_files(client, target, files, channel, answer["ts"], attempts, timeout)
        except OutgoingError as exc:
            exc.message = f"The message was posted, but its files were not: {exc.message}"
            raise
        if on_progress is not None:
            on_progress(answer)


def _upload_files(
    client: WebClient,
    target: Target,
    files: Sequence[tuple[str, bytes]],
    channel: str,
    thread_ts: str,
    attempts: Attempts,
    timeout: float,
) -> list[dict[str, Any]]:
    """Slack's file upload v2, as slack_sdk's files_upload_v2 makes it, each request retried on its own:
    files.getUploadURLExternal for each file, its bytes POSTed to the URL given, then one
    files.completeUploadExternal sharing them all in the message's thread."""
    uploaded = []
    for filename, content in files:
        granted = attempts.run(
            "files.getUploadURLExternal",
            lambda filename=filename, content=content: _slack(  # type: ignore[misc]
                target, lambda: client.files_getUploadURLExternal(filename=filename, length=len(content))
            ),
        )
        upload_url, file_id = granted.get("upload_url"), granted.get("file_id")
        attempts.run(
            "file upload",
            lambda upload_url=upload_url, content=content: _upload(upload_url, content, timeout, client.proxy),  # type: ignore[misc]
        )
        uploaded.append({"id": file_id, "title": filename})
    attempts.run(
        "files.completeUploadExternal",
        lambda: _slack(
            target, lambda: client.files_completeUploadExternal(files=uploaded, channel_id=channel, thread_ts=thread_ts)
        ),
    )
    return uploaded


def _slack(target: Target, call: Callable[[], T]) -> T:
    """One Web API call; OutgoingError in words when it fails, saying whether to retry."""
    try:
        return call()
    except SlackApiError as exc:
        raise _slack_error(target, exc) from None
    except (URLError, TimeoutError, ConnectionError, http.client.HTTPException):
        raise OutgoingError("Could not reach Slack's API.", permanent=False) from None
    except SlackClientError as exc:
        raise OutgoingError(f"The Slack request failed ({type(exc).__name__}).", permanent=True) from None


def _slack_error(target: Target, exc: SlackApiError) -> OutgoingError:
    response = exc.response
    status = response.status_code
    data = response.data if isinstance(response.data, dict) else {}
    error = str(data.get("error") or "")
    retry_after = fetch.retry_after_seconds(_header(response.headers, "Retry-After"))
    if status == 429 or error == "ratelimited":
        return OutgoingError(
            f"Slack asked us to slow down (HTTP {status}).", permanent=False, retry_after=retry_after, status=status
        )
    if status >= 500 or error in SLACK_TRANSIENT:
        return OutgoingError(
            f"Slack is unavailable right now (HTTP {status}{f', {error}' if error else ''}).",
            permanent=False,
            retry_after=retry_after,
            status=status,
        )
    words = SLACK_WORDS.get(error, "Slack refused the request ({error}).")
    message = words.format(var=target.secret_env_var, channel=target.channel, error=error or f"HTTP {status}")
    refused = OutgoingError(message, permanent=True, status=status)
    refused.answer = {"status": status, "error": error}
    return refused


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers or {}).items():
        if key.lower() == name.lower():
            return value[0] if isinstance(value, list) else value
    return None


def _upload(url: str | None, content: bytes, timeout: float, proxy: str | None) -> None:
    """POST a file's bytes to the upload URL Slack gave (no token: the URL is the grant), through the
    proxy the Slack client uses, if any, as slack_sdk's files_upload_v2 does."""
    if not url or urlsplit(url).scheme not in fetch.SCHEMES:
        raise OutgoingError("Slack gave no upload URL for a file.", permanent=True)
    try:
        with requests.Session() as http:
            http.trust_env = False  # no ~/.netrc credentials; the proxy is the Slack client's
            proxies = {"http": proxy, "https": proxy} if proxy else None
            response = http.post(url, data=content, timeout=(timeout, timeout), allow_redirects=False, proxies=proxies)
    except requests.Timeout:
        raise OutgoingError(
            f"Slack's file upload did not answer within {timeout:g} seconds.", permanent=False
        ) from None
    except requests.RequestException:
        raise OutgoingError("Could not upload a file to Slack.", permanent=False) from None
    if response.status_code != 200:
        raise _status_error(
            "Slack's file upload", response.status_code, response.reason, response.headers.get("Retry-After")
        )
