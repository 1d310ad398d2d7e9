"""The results of a chaos run as Markdown tables (also readable as printed text)."""

from __future__ import annotations

import os
import platform
from collections import Counter

from .harness import Outcome
from .invariants import RULES
from .plan import DESCRIPTIONS, Kind


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(headers[i]), *(len(row[i]) for row in cells)) for i in range(len(headers))]
    line = lambda row: "| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |"  # noqa: E731
    return "\n".join([line(headers), "| " + " | ".join("-" * width for width in widths) + " |", *map(line, cells)])


def render(outcome: Outcome, *, command: str) -> str:
    """The whole report: the run, faults by kind, emails, runs, invariants, findings, the plan."""
    parts = [
        f"# Chaos run: {outcome.profile.name}, seed {outcome.seed}",
        _summary(outcome, command),
        "## Faults by kind",
        _faults(outcome),
        "## Emails and runs",
        _emails(outcome),
        "## Invariants",
        _invariants(outcome),
    ]
    if not outcome.ok:
        parts += ["## Findings", _block(outcome.failure_message(limit=200))]
    if outcome.verdict is not None and outcome.verdict.observations:
        observed = outcome.verdict.observations
        parts += ["## Observations (not invariants)", "\n".join(f"- {line}" for line in observed)]
    parts += [
        "## The schedule of faults",
        f"<details><summary>all {len(outcome.plan)} faults, as applied</summary>\n\n"
        f"{_block(_applied(outcome))}\n\n</details>",
    ]
    return "\n\n".join(parts) + "\n"


def _summary(outcome: Outcome, command: str) -> str:
    seconds = outcome.seconds
    verdict = "PASS: no invariant violated" if outcome.ok else "FAIL: see the findings below"
    rows = [
        ["result", verdict],
        ["seed", outcome.seed],
        ["code", outcome.code],
        ["command", f"`{command}`"],
        ["rerun", "; ".join(f"`{each}`" for each in outcome.rerun)],
        ["started", f"{outcome.started_at:%Y-%m-%d %H:%M} UTC"],
        ["duration", _duration(seconds.get("total", 0))],
        ["phases", ", ".join(f"{name} {_duration(value)}" for name, value in seconds.items() if name != "total")],
        ["reports", f"{outcome.profile.reports} × {outcome.profile.addresses} addresses, every minute"],
        ["machine", f"{os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}"],
    ]
    if outcome.settled is not None and not outcome.settled.settled:
        rows.append(["settled", "NO: the bound was reached with runs open or unalerted"])
    if outcome.error:
        rows.append(["harness error", outcome.error])
    return table(["", ""], rows)


def _faults(outcome: Outcome) -> str:
    counts = Counter(fault.kind for fault in outcome.plan)
    failed = Counter(fault.kind for fault in outcome.plan if fault.note.startswith("could not"))
    rows = [[kind.value, counts[kind], DESCRIPTIONS[kind]] for kind in Kind]
    rows.append(["total", sum(counts.values()), f"{sum(failed.values())} could not be applied"])
    text = table(["kind", "count", "what"], rows)
    extra = []
    if outcome.exited_by_themselves:
        extra.append(f"Processes that exited by themselves: {', '.join(outcome.exited_by_themselves)}.")
    if outcome.smtp_dropped:
        extra.append(f"The SMTP server dropped {outcome.smtp_dropped} unacknowledged messages of clients that gave up.")
    answers = ", ".join(f"{key}: {value}" for key, value in sorted(outcome.source_answers.items()))
    extra.append(f"Data source answers: {answers or 'none'}.")
    return text + "\n\n" + " ".join(extra)


def _emails(outcome: Outcome) -> str:
    if outcome.verdict is None:
        return "Not checked: the harness did not finish."
    tally = outcome.verdict.tally
    runs = tally.runs
    rows = [
        ["report slots checked (reports × minutes)", tally.slots],
        ["slots with no run at all", tally.slots_without_run],
        ["emails expected (every address of every run or slot)", tally.emails_expected],
        ["received exactly once", tally.received_once],
        ["duplicated (received more than once)", tally.duplicated],
        ["not received: failed in words, with an alert", tally.failed_alerted],
        ["lost silently", tally.lost_silently],
        ["report emails in the mailbox", tally.report_emails],
        ["interrupted while sending (of which received)", f"{tally.interrupted} ({tally.interrupted_received})"],
        ["runs", sum(runs.values())],
        ["runs by status", ", ".join(f"{status} {count}" for status, count in sorted(runs.items()))],
        ["runs by trigger", ", ".join(f"{trigger} {count}" for trigger, count in sorted(tally.triggers.items()))],
        ["runs failed, missed or held, with an alert received", tally.runs_failed_alerted],
        ["alerts recorded / alert emails received", f"{tally.alerts_recorded} / {tally.alert_emails}"],
    ]
    return table(["measure", "value"], rows)


def _invariants(outcome: Outcome) -> str:
    if outcome.verdict is None:
        return "Not checked: the harness did not finish."
    by_rule = outcome.verdict.by_rule()
    rows = [[rule, text, by_rule[rule]] for rule, text in RULES.items()]
    rows.append(["", "total", sum(by_rule.values())])
    return table(["#", "invariant", "violations"], rows)


def _applied(outcome: Outcome) -> str:
    return "\n".join(f"{fault.describe()}  {fault.note}".rstrip() for fault in outcome.plan)


def _block(text: str) -> str:
    return f"```\n{text}\n```"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
