"""Apply a plan of faults to the running stack, each at its time, and heal everything at the end."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .plan import Fault, Kind
from .smtp import ChaosSmtp
from .source import ChaosSource
from .stack import BEATS, Stack

BEGIN, END = "begin", "end"


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the fault phase started
    action: str  # BEGIN or END
    fault: Fault


def timeline(plan: list[Fault]) -> list[Step]:
    """Every fault's beginning and end, in time order (an end before a beginning at the same moment)."""
    steps = [Step(fault.at, BEGIN, fault) for fault in plan] + [Step(fault.ends_at, END, fault) for fault in plan]
    return sorted(steps, key=lambda step: (step.at, step.action == BEGIN, step.fault.index))


class FaultRunner:
    """Drives the stack, the SMTP server and the data source through a plan."""

    def __init__(
        self,
        *,
        stack: Stack,
        smtp: ChaosSmtp,
        source: ChaosSource,
        seed: int,
        say: Callable[[str], None],
        progress: Callable[[float], None] | None = None,
        progress_every: float = 30.0,
    ):
        self.stack, self.smtp, self.source = stack, smtp, source
        self.say = say
        self.progress = progress
        self.progress_every = progress_every
        # Decisions taken while running (which beat, when no beat says it leads) are seeded too.
        self.rng = random.Random(f"chaos-run:{seed}")
        self.killed: dict[int, str] = {}  # fault index → role killed

    def run(self, plan: list[Fault]) -> float:
        """Apply the plan from now on; returns the monotonic time the fault phase started."""
        started = time.monotonic()
        next_progress = started + self.progress_every
        for step in timeline(plan):
            while (now := time.monotonic()) < started + step.at:
                if self.progress and now >= next_progress:
                    self.progress(now - started)
                    next_progress = now + self.progress_every
                time.sleep(min(0.2, started + step.at - now))
            self._apply(step, elapsed=time.monotonic() - started)
        return started

    def _apply(self, step: Step, *, elapsed: float) -> None:
        fault = step.fault
        try:
            note = self._begin(fault) if step.action == BEGIN else self._end(fault)
        except Exception as exc:  # a fault that cannot be applied is reported, never silently skipped
            note = f"could not be applied: {type(exc).__name__}: {exc}"
        if step.action == BEGIN:
            fault.note = note
        params = " ".join(f"{key}={value}" for key, value in fault.params.items())
        what = f"#{fault.index} {fault.kind} {fault.target} {fault.duration}s {params}".rstrip()
        self.say(f"  t+{elapsed:6.1f}s {step.action:<5} {what}" + (f": {note}" if note else ""))

    def _begin(self, fault: Fault) -> str:
        kind = fault.kind
        if kind is Kind.WORKER_KILL:
            self.killed[fault.index] = fault.target
            return f"killed {self.stack.kill(fault.target)}"
        if kind is Kind.BEAT_KILL:
            return self._kill_beat(fault)
        if kind is Kind.BROKER_RESTART:
            self.killed[fault.index] = "broker"
            return f"killed {self.stack.kill('broker')} (its queues are lost)"
        if kind is Kind.SMTP_STALL:
            self.smtp.stall(float(fault.params["delay"]))
        elif kind is Kind.SMTP_ERROR:
            self.smtp.refuse(str(fault.params["phase"]), int(fault.params["code"]))
        elif kind is Kind.API_OUTAGE:
            self.source.fail(int(fault.params["status"]))
        elif kind is Kind.API_TIMEOUT:
            self.source.hang(float(fault.params["delay"]))
        return ""

    def _kill_beat(self, fault: Fault) -> str:
        leader = self.stack.leading_beat()
        alive = [role for role in BEATS if role in self.stack.live]
        if not alive:
            return "no beat running"
        role = leader if leader in alive else self.rng.choice(alive)
        self.killed[fault.index] = role
        how = "leading" if leader == role else "neither beat says it leads: picked at random"
        return f"killed {self.stack.kill(role)} ({how})"

    def _end(self, fault: Fault) -> str:
        if fault.kind in (Kind.WORKER_KILL, Kind.BEAT_KILL, Kind.BROKER_RESTART):
            role = self.killed.pop(fault.index, None)
            if role is None or role in self.stack.live:
                return ""
            self.stack.start_role(role)
            return f"started {self.stack.live[role]}"
        if fault.kind in (Kind.SMTP_STALL, Kind.SMTP_ERROR):
            self.smtp.normal()
        else:
            self.source.normal()
        return ""

    def heal(self) -> list[str]:
        """Everything back to normal: services answering, every process running and ready."""
        self.smtp.normal()
        self.source.normal()
        started = self.stack.restart_missing()
        self.stack.wait_all_ready(timeout=120)
        return started
