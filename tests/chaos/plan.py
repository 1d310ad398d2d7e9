"""The seeded schedule of faults: which fault, when, for how long. A pure function of the seed.

Faults on the same target never overlap (a worker is not killed while it is still down;
the SMTP server does not stall while it is refusing); faults on different targets do, as
they would in production. Every fault has ended when the fault phase ends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    WORKER_KILL = "worker_kill"
    BEAT_KILL = "beat_kill"
    BROKER_RESTART = "broker_restart"
    SMTP_STALL = "smtp_stall"
    SMTP_ERROR = "smtp_error"
    API_OUTAGE = "api_outage"
    API_TIMEOUT = "api_timeout"


DESCRIPTIONS = {
    Kind.WORKER_KILL: "SIGKILL a Celery worker (its process group), start it again after the pause",
    Kind.BEAT_KILL: "SIGKILL the leading beat, start a new standby after the pause",
    Kind.BROKER_RESTART: "SIGKILL the redis-server broker, start it empty on the same port after the pause",
    Kind.SMTP_STALL: "the SMTP server holds every reply (greeting included) for `delay` seconds",
    Kind.SMTP_ERROR: "the SMTP server answers `code` at `phase` (greeting, RCPT or end of DATA)",
    Kind.API_OUTAGE: "the data source answers `status` to every request",
    Kind.API_TIMEOUT: "the data source answers after `delay` seconds: slowly (1-2 s) or past the read timeout (8 s)",
}
# Kills weigh most: a run must survive them and still send each address once. The SMTP
# server and the data source failing for a while mostly fail runs (in words, with an alert):
# weighed as much, they would leave few runs that send anything at all.
WEIGHTS = {
    Kind.WORKER_KILL: 30,
    Kind.BEAT_KILL: 14,
    Kind.BROKER_RESTART: 14,
    Kind.SMTP_STALL: 12,
    Kind.SMTP_ERROR: 10,
    Kind.API_OUTAGE: 10,
    Kind.API_TIMEOUT: 10,
}
# After a kill, the time a process needs to be up again before its target takes another fault.
RECOVERY_SECONDS = {Kind.WORKER_KILL: 8.0, Kind.BEAT_KILL: 10.0, Kind.BROKER_RESTART: 4.0}
GAP_SECONDS = 2.0  # between two faults on one target
WORKERS = ("worker-a", "worker-b")
SMTP_ERRORS = (("greeting", 421), ("rcpt", 450), ("rcpt", 550), ("data", 451), ("data", 554))
SMTP_SLOW_REPLY = (0.4, 1.0)  # seconds: well under the processes' EMAIL_TIMEOUT, only slow
SMTP_STALLED_REPLY = 15.0  # seconds: well over EMAIL_TIMEOUT, the client gives up
API_SLOW = (1.0, 2.0)  # seconds: under the data source's read timeout (chaos sets 3 s), only slow
API_TIMED_OUT = 8.0  # seconds: over the read timeout, the client gives up
WINDOW_SECONDS = (3.0, 12.0)  # how long the SMTP server or the data source misbehaves
# The fault phase starts this long before the first slot; slots follow every minute. Faults
# are wished mostly AROUND_SLOT seconds around a slot (NEAR_SLOT of them), where the runs are.
FIRST_SLOT_AT = 10.0
NEAR_SLOT = 0.5
AROUND_SLOT = (-8.0, 6.0)


@dataclass(frozen=True)
class Profile:
    """How big a chaos run is: reports, addresses, faults, and bounds on waiting."""

    name: str
    reports: int
    addresses: int
    fault_seconds: float
    faults: int
    slots_bound_seconds: float  # after the faults: every slot must have a run within this
    settle_bound_seconds: float  # then: every run finished and alerted within this


SHORT = Profile(
    "short", reports=7, addresses=5, fault_seconds=200, faults=15, slots_bound_seconds=120, settle_bound_seconds=180
)
LONG = Profile(
    "long", reports=10, addresses=5, fault_seconds=1200, faults=210, slots_bound_seconds=150, settle_bound_seconds=300
)
PROFILES = {profile.name: profile for profile in (SHORT, LONG)}


@dataclass
class Fault:
    """One fault: `at` seconds after the fault phase starts, lasting `duration` seconds."""

    index: int
    at: float
    kind: Kind
    target: str
    duration: float
    params: dict[str, object] = field(default_factory=dict)
    note: str = ""  # what happened when it was applied (e.g. which beat was leading)

    @property
    def ends_at(self) -> float:
        return self.at + self.duration

    def describe(self) -> str:
        params = " ".join(f"{key}={value}" for key, value in self.params.items())
        when = f"t+{self.at:6.1f}s"
        return f"#{self.index:<3} {when} {self.kind:<15} {self.target:<9} {self.duration:5.1f}s {params}".rstrip()


def target_of(kind: Kind, rng: random.Random) -> str:
    if kind is Kind.WORKER_KILL:
        return rng.choice(WORKERS)
    return {Kind.BEAT_KILL: "beat", Kind.BROKER_RESTART: "broker"}.get(kind, kind.value.split("_")[0])


def make_plan(seed: int, profile: Profile) -> list[Fault]:
    """The faults of a run, in time order: the same seed and profile give the same plan."""
    rng = random.Random(f"chaos-plan:{profile.name}:{seed}")
    end = profile.fault_seconds
    slots = [slot for slot in range(int(FIRST_SLOT_AT), int(end), 60)]
    starts = sorted(_wished_start(rng, slots, end) for _ in range(profile.faults))
    free_at: dict[str, float] = {}
    plan: list[Fault] = []
    for start in starts:
        fault = _place(rng, start, free_at, end, index=len(plan) + 1)
        if fault is not None:
            plan.append(fault)
            free_at[fault.target] = fault.ends_at + RECOVERY_SECONDS.get(fault.kind, 0.0) + GAP_SECONDS
    plan.sort(key=lambda fault: (fault.at, fault.index))
    for number, fault in enumerate(plan, start=1):
        fault.index = number
    return plan


def _wished_start(rng: random.Random, slots: list[int], end: float) -> float:
    """Mostly just before or during a slot's burst of runs (a fault in the quiet rest of a minute
    still meets retries, sweeps and alerts, but far less)."""
    if slots and rng.random() < NEAR_SLOT:
        return max(0.0, rng.choice(slots) + rng.uniform(*AROUND_SLOT))
    return rng.uniform(0, end * 0.95)


def _place(rng: random.Random, start: float, free_at: dict[str, float], end: float, *, index: int) -> Fault | None:
    """A fault at `start` (or when its target is next free), or None when nothing fits before `end`."""
    kinds = list(WEIGHTS)
    for _ in range(20):
        kind = rng.choices(kinds, weights=[WEIGHTS[kind] for kind in kinds])[0]
        target = target_of(kind, rng)
        at = max(start, free_at.get(target, 0.0))
        duration, params = _shape(kind, rng)
        latest_end = end - RECOVERY_SECONDS.get(kind, 0.0)
        if at + duration <= latest_end:
            return Fault(index=index, at=round(at, 1), kind=kind, target=target, duration=duration, params=params)
    return None


def _shape(kind: Kind, rng: random.Random) -> tuple[float, dict[str, object]]:
    """How long the fault lasts and its parameters."""
    if kind is Kind.WORKER_KILL:
        return round(rng.uniform(2, 8), 1), {}
    if kind is Kind.BEAT_KILL:
        return round(rng.uniform(1, 5), 1), {}
    if kind is Kind.BROKER_RESTART:
        return round(rng.uniform(1, 6), 1), {}
    duration = round(rng.uniform(*WINDOW_SECONDS), 1)
    if kind is Kind.SMTP_STALL:
        stalled = rng.random() < 0.6
        delay = SMTP_STALLED_REPLY if stalled else round(rng.uniform(*SMTP_SLOW_REPLY), 2)
        return duration, {"delay": delay}
    if kind is Kind.SMTP_ERROR:
        phase, code = rng.choice(SMTP_ERRORS)
        return duration, {"phase": phase, "code": code}
    if kind is Kind.API_OUTAGE:
        return duration, {"status": rng.choice((500, 502, 503))}
    timed_out = rng.random() < 0.6
    return duration, {"delay": API_TIMED_OUT if timed_out else round(rng.uniform(*API_SLOW), 2)}


def format_plan(plan: list[Fault]) -> str:
    return "\n".join(fault.describe() for fault in plan)
