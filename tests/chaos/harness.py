"""One chaos run: set up the reports, start the stack, apply the faults, settle, check.

Used by the CLI (tests/chaos/run.py, its own database) and by the pytest test (the test
database). Django must be set up, with the database the stack is given as the default one.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.db import close_old_connections
from django.utils import timezone

from reporting.models import Delivery, ReportRun
from tests.e2e.conftest import ROOT

from .faults import FaultRunner
from .invariants import Verdict, check
from .plan import FIRST_SLOT_AT, Fault, Profile, format_plan, make_plan
from .scenario import ChaosReport, create_reports, speed_up_sweeps
from .settle import Settled, ceil_minute, settle
from .smtp import ChaosSmtp
from .source import ChaosSource
from .stack import Stack

LEAD_SECONDS = FIRST_SLOT_AT  # the fault phase starts this long before the first slot checked


@dataclass
class Outcome:
    profile: Profile
    seed: int
    plan: list[Fault]
    rerun: list[str]
    work_dir: Path
    verdict: Verdict | None = None
    settled: Settled | None = None
    error: str = ""  # the harness itself failed (not an invariant): why
    started_at: datetime = field(default_factory=timezone.now)
    seconds: dict[str, float] = field(default_factory=dict)  # phase → duration
    smtp_dropped: int = 0
    source_answers: Counter[str] = field(default_factory=Counter)
    exited_by_themselves: list[str] = field(default_factory=list)
    restarted_at_heal: list[str] = field(default_factory=list)
    run_rows: dict[int, str] = field(default_factory=dict)  # run id → the run's row, for violations
    code: str = field(default_factory=lambda: code_version())  # the commit the processes ran

    @property
    def ok(self) -> bool:
        return not self.error and self.verdict is not None and not self.verdict.violations

    def failure_message(self, *, limit: int = 60) -> str:
        lines = [f"Chaos run ({self.profile.name}) failed with seed {self.seed}."]
        if self.error:
            lines.append(f"The harness could not finish: {self.error}")
        if self.verdict is not None:
            lines.append(f"{len(self.verdict.violations)} invariant violations:")
            lines += [f"  {violation}" for violation in self.verdict.violations[:limit]]
            if len(self.verdict.violations) > limit:
                lines.append(f"  … and {len(self.verdict.violations) - limit} more")
        if self.run_rows:
            lines.append("The runs named above:")
            lines += [f"  {row}" for _pk, row in sorted(self.run_rows.items())[:limit]]
        lines.append(f"Logs: {self.work_dir / 'logs'}")
        lines.append("Rerun the same schedule with:")
        lines += [f"  {command}" for command in self.rerun]
        return "\n".join(lines)


def code_version() -> str:
    """The commit of the code the stack runs, and whether tracked files differ from it."""
    git = ["git", "-C", str(ROOT)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30)
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if commit.returncode != 0:
        return "unknown (not a git checkout)"
    return commit.stdout.strip() + (" with uncommitted changes" if changed.stdout.strip() else "")


def rerun_commands(profile: Profile, seed: int) -> list[str]:
    commands = [f".venv/bin/python -m tests.chaos.run --{profile.name} --seed {seed}"]
    if profile.name == "long":
        commands.insert(0, f"make chaos SEED={seed}")
    else:
        commands.append(
            f"CHAOS_SEED={seed} DATABASE_URL=postgres://postgres@127.0.0.1:5432/reporting "
            ".venv/bin/pytest tests/chaos -q -p no:cacheprovider"
        )
    return commands


def run_chaos(
    *, profile: Profile, seed: int, database_url: str, work_dir: Path, say: Callable[[str], None] = print
) -> Outcome:
    """Run the seeded schedule of faults against the whole stack and check the invariants."""
    plan = make_plan(seed, profile)
    outcome = Outcome(profile=profile, seed=seed, plan=plan, rerun=rerun_commands(profile, seed), work_dir=work_dir)
    say(f"chaos ({profile.name}): seed {seed}; rerun with: {outcome.rerun[0]}")
    size = f"{profile.reports} reports × {profile.addresses} addresses"
    say(f"{len(plan)} faults over {profile.fault_seconds:.0f}s, {size}")
    say(format_plan(plan))
    smtp, source = ChaosSmtp(), ChaosSource()
    smtp.start()
    source.start()
    stack = Stack(work_dir=work_dir, database_url=database_url, smtp_port=smtp.port)
    try:
        _run(outcome, stack, smtp, source, say)
    except Exception as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        say(f"the harness failed: {outcome.error}")
    finally:
        stack.stop()
        smtp.stop()
        source.stop()
    outcome.smtp_dropped = smtp.dropped
    outcome.source_answers = source.answered
    outcome.exited_by_themselves = stack.exited_by_themselves
    return outcome


def _run(outcome: Outcome, stack: Stack, smtp: ChaosSmtp, source: ChaosSource, say: Callable[[str], None]) -> None:
    clock = time.monotonic()
    reports = create_reports(outcome.profile, source.base_url)
    say(f"sweeps every 10s: {', '.join(speed_up_sweeps())}")
    stack.start()
    # The faults begin a little before the first slot checked, so that every slot is under fire.
    first_slot = ceil_minute(timezone.now() + timedelta(seconds=LEAD_SECONDS + 2))
    time.sleep(max(0.0, (first_slot - timedelta(seconds=LEAD_SECONDS) - timezone.now()).total_seconds()))
    outcome.seconds["start, until just before the first slot"] = time.monotonic() - clock
    say(f"stack ready; slots checked from {first_slot:%H:%M} UTC; faults begin")

    clock = time.monotonic()
    runner = FaultRunner(
        stack=stack, smtp=smtp, source=source, seed=outcome.seed, say=say, progress=_progress(reports, smtp, say)
    )
    runner.run(outcome.plan)
    outcome.restarted_at_heal = runner.heal()
    outcome.seconds["faults"] = time.monotonic() - clock
    say(f"faults over after {outcome.seconds['faults']:.0f}s; everything running again")

    clock = time.monotonic()
    profile = outcome.profile
    outcome.settled = settle(
        reports,
        first_slot=first_slot,
        smtp=smtp,
        slots_bound=profile.slots_bound_seconds,
        settle_bound=profile.settle_bound_seconds,
        say=say,
    )
    outcome.seconds["settle"] = time.monotonic() - clock
    stack.stop()  # the archive no longer moves while it is checked
    close_old_connections()
    outcome.verdict = check(
        reports,
        smtp.mailbox(),
        first_slot=first_slot,
        last_slot=outcome.settled.last_slot,
        settled_at=outcome.settled.settled_at,
    )
    named = {violation.run_id for violation in outcome.verdict.violations if violation.run_id}
    outcome.run_rows = describe_runs(sorted(named)[:200])
    outcome.seconds["total"] = (timezone.now() - outcome.started_at).total_seconds()


def _progress(reports: list[ChaosReport], smtp: ChaosSmtp, say: Callable[[str], None]) -> Callable[[float], None]:
    def report(elapsed: float) -> None:
        close_old_connections()
        statuses = Counter(
            ReportRun.objects.filter(report_id__in=[r.pk for r in reports]).values_list("status", flat=True)
        )
        shown = ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
        say(f"  t+{elapsed:6.1f}s progress: runs {sum(statuses.values())} ({shown}); mailbox {len(smtp.mailbox())}")

    return report


def describe_runs(run_ids: list[int]) -> dict[int, str]:
    """Each run's row in words: what a bug report about it needs."""
    rows = {}
    for run in ReportRun.objects.filter(pk__in=run_ids).select_related("report").prefetch_related("deliveries"):
        deliveries = "; ".join(
            f"{d.address}={d.status}" + (f" ({d.error[:80]})" if d.error else "")
            for d in run.deliveries.all()
            if d.kind == Delivery.Kind.ORIGINAL
        )
        fields = {
            "report": run.report.slug,
            "period": run.period_key,
            "trigger": run.trigger,
            "status": run.status,
            "attempts": run.attempts,
            "recoveries": run.recoveries,
            "deadline_at": getattr(run, "deadline_at", "n/a"),
            "created": f"{run.created_at:%H:%M:%S}",
            "started": f"{run.started_at:%H:%M:%S}" if run.started_at else None,
            "finished": f"{run.finished_at:%H:%M:%S}" if run.finished_at else None,
            "alerted": f"{run.alerted_at:%H:%M:%S}" if run.alerted_at else None,
            "error": run.error[:300],
            "notes": run.notes[:300],
        }
        described = " ".join(f"{name}={value!r}" for name, value in fields.items())
        rows[run.pk] = f"run {run.pk}: {described} deliveries: {deliveries}"
    return rows
