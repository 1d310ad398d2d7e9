"""Beat's scheduler: django-celery-beat's DatabaseScheduler, made to scale to many reports.

The PeriodicTask and CrontabSchedule rows stay the one source of truth, edited in the
admin as before. What changes is how beat follows them. The stock scheduler, with
10,000 reports, compares its whole schedule on every tick and asks the database whether
anything changed on every tick: ~0.1 s a tick, and a tick sends one task, so a burst of
10,000 takes over a quarter of an hour. On any change it reloads every row, and it writes
each fired task back with two queries and a commit each (bench/bench_schedules.py). This one:

- asks whether anything changed once a second (it ticks at least that often, so an edit
  is picked up within about a second, not beat's 5-second max_interval), and then reads
  a fingerprint of each enabled task's schedule-relevant columns: it reloads only the rows
  whose fingerprint differs, adds new ones and drops the ones gone (deleted, disabled);
- patches beat's heap for those entries only, so a tick costs O(log n), not O(n);
- writes last_run_at and total_run_count back in bulk (an UPDATE by id, executed for all
  rows at once, in transactions of at most WRITE_BATCH rows), without touching
  date_changed (which is what marks a row edited) and never onto a row disabled meanwhile;
- keeps ~2 KB per schedule, not ~7 KB: a slim TaskRow instead of each row's model
  instance, and one parsed crontab per distinct schedule, shared by its entries (parsing
  them was also half of the start-up);
- sends the reports due at the same moment together: the stock tick sends one message
  per tick, and publishing 10,000 messages one by one takes 10-20 s on a small machine.
  A burst goes out as at most about MESSAGES_PER_BURST `run_scheduled_reports` messages
  of up to MAX_REPORTS_PER_MESSAGE reports each (one report per message while the burst
  is small, so the workers still share the work evenly);
- leads only while it holds the database's beat lock (reporting.leadership), so that any
  number of beats may run: a standby publishes and writes nothing, tries to take the lock
  every LEADERSHIP_CHECK_SECONDS, and on taking it reads the whole schedule afresh, with
  each task's last run as the previous leader left it.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import current_app, signals
from celery.beat import Service, event_t
from celery.utils.log import get_logger
from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connections, router, transaction
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.schedulers import SCHEDULE_SYNC_MAX_INTERVAL, DatabaseScheduler, ModelEntry
from django_celery_beat.tzcrontab import TzAwareCrontab
from kombu.utils.json import loads

from reporting.health import BeatHeartbeat
from reporting.leadership import Leadership, for_database
from reporting.schedules import RUN_TASK, next_slot

logger = get_logger(__name__)

# Everything about a task that changes what beat sends or when; not last_run_at or
# total_run_count, which beat itself writes.
FINGERPRINT_FIELDS = (
    "name",
    "task",
    "args",
    "kwargs",
    "queue",
    "exchange",
    "routing_key",
    "priority",
    "headers",
    "expires",
    "expire_seconds",
    "one_off",
    "start_time",
    "date_changed",
    "crontab_id",
    "crontab__minute",
    "crontab__hour",
    "crontab__day_of_week",
    "crontab__day_of_month",
    "crontab__month_of_year",
    "crontab__timezone",
    "interval_id",
    "interval__every",
    "interval__period",
    "solar_id",
    "solar__event",
    "solar__latitude",
    "solar__longitude",
    "clocked_id",
    "clocked__clocked_time",
)
SCHEDULE_RELATIONS = ("crontab", "interval", "solar", "clocked")
CHANGE_CHECK_SECONDS = 1.0
BATCH_SIZE = 500  # rows per query: well under SQLite's limit on query parameters
WRITE_BATCH = 5000  # last runs written back per transaction
BATCH_TASK = "reporting.tasks.run_scheduled_reports"
MESSAGES_PER_BURST = 200
MAX_REPORTS_PER_MESSAGE = 100
MAX_BURST = 20_000  # due reports taken in one tick; the rest go in the next
# How often a standby tries to take the lock, and a leader checks it still holds it: a
# leader killed with SIGKILL has a successor within about this long.
LEADERSHIP_CHECK_SECONDS = 5.0


class SlotCrontab(TzAwareCrontab):
    """A report's crontab, due at the slots reporting.schedules computes (what runs and admin pages use).

    Celery's own crontab fires a local time skipped by a DST change an hour late (02:30
    on a night that jumps from 02:00 to 03:00 fires at 03:30), while the run's slot and the
    catch-up sweep put it at the change (03:00). Everything else (the starting deadline,
    what is_due returns) stays celery's.
    """

    @classmethod
    def from_crontab(cls, schedule: TzAwareCrontab) -> SlotCrontab:
        return cls(*schedule.__reduce__()[1], app=schedule._app)

    _known: tuple[datetime, datetime] | None = None  # (after, the next slot): no slot lies in between

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        following = self._next_slot(self.maybe_make_aware(last_run_at))
        if following is None:  # never fires again; check back in a day
            return timedelta(days=1)
        # In UTC: subtracting two datetimes that share a tzinfo ignores a DST change between them.
        return following.astimezone(UTC) - self.maybe_make_aware(self.now()).astimezone(UTC)

    def _next_slot(self, after: datetime) -> datetime | None:
        """next_slot, remembered: entries sharing this schedule and fired together ask about nearly the same moment."""
        known = self._known
        if known is not None and known[0] <= after < known[1]:
            return known[1]
        following = next_slot(self, self.tz, after=after)
        if following is not None:
            self._known = (after, following)
        return following


@dataclass(slots=True)
class TaskRow:
    """What beat keeps of a plain PeriodicTask row: what is_due reads and what sync writes back.

    A model instance with its crontab's (select_related) is ~2.5 KB; this is ~100 bytes.
    Rows with a start time, an expiry or one-off keep their model: is_due saves those.
    """

    pk: int
    name: str
    enabled: bool
    last_run_at: datetime | None
    total_run_count: int
    start_time: None = None
    expires: None = None
    one_off: bool = False
    no_changes: bool = False


class ReportEntry(ModelEntry):
    """A ModelEntry that keeps a TaskRow instead of the row's model, and shares parsed crontabs.

    Parsing a crontab builds five sets (~3.5 KB, ~0.2 ms); with `crontabs`, the scheduler's
    cache of them, entries with the same schedule share one. The next instance of a fired
    entry shares its parsed schedule too.
    """

    schedule: Any
    model: Any  # a TaskRow, or the PeriodicTask of a row that is not plain (see _is_plain_row)

    def __init__(self, model: PeriodicTask, app=None, *, crontabs: dict[tuple, TzAwareCrontab] | None = None):
        if crontabs is None or not _is_plain_crontab_row(model) or not self._read_plain_row(model, app, crontabs):
            super().__init__(model, app=app)
            if _is_report_entry(self) and type(self.schedule) is TzAwareCrontab:
                self.schedule = SlotCrontab.from_crontab(self.schedule)
        row = self.model
        if _is_plain_row(row):
            self.model = TaskRow(
                pk=row.pk,
                name=row.name,
                enabled=row.enabled,
                last_run_at=row.last_run_at,
                total_run_count=row.total_run_count,
                no_changes=getattr(row, "no_changes", False),
            )

    def _read_plain_row(self, model: PeriodicTask, app, crontabs: dict[tuple, TzAwareCrontab]) -> bool:
        """ModelEntry.__init__ (django-celery-beat 2.x) for a plain crontab row, with the crontab from the cache.

        False, having set nothing that matters, when its JSON is bad: ModelEntry's own reading reports it.
        """
        try:
            args, kwargs, headers = loads(model.args or "[]"), loads(model.kwargs or "{}"), loads(model.headers or "{}")
        except ValueError:
            return False
        self.app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        self.name, self.task, self.args, self.kwargs = model.name, model.task, args, kwargs
        self.options = {
            option: getattr(model, option)
            for option in ("queue", "exchange", "routing_key", "priority")
            if getattr(model, option) is not None
        }
        self.options["headers"] = headers | {"periodic_task_name": model.name}
        self.total_run_count = model.total_run_count
        self.model = model
        if not model.last_run_at:
            model.last_run_at = model.date_changed or self._default_now()
        self.last_run_at = model.last_run_at
        self.schedule = _shared_crontab(model.crontab, crontabs, slots=_is_report_entry(self), app=self.app)
        return True

    def __next__(self) -> ReportEntry:
        self.model.last_run_at = self._default_now()
        self.model.total_run_count += 1
        self.model.no_changes = True
        following = object.__new__(type(self))  # not copy.copy: __reduce__ would rebuild from the row
        following.__dict__.update(self.__dict__)
        following.last_run_at = self.model.last_run_at
        following.total_run_count = self.model.total_run_count
        return following


class ReportScheduler(DatabaseScheduler):
    """DatabaseScheduler that reloads only what changed and keeps its heap between changes.

    It ticks only while it leads, by `leadership`: celery's beat gets the database's lock
    (see lead_by_the_database_lock); a scheduler built by hand without one leads alone.
    """

    Entry = ReportEntry
    _initial_read: bool
    _dirty: set[int]
    _heap: list | None

    def __init__(self, *args, leadership: Leadership | None = None, **kwargs):
        self.leadership = leadership
        self._leading = False
        self._next_leadership_check = 0.0
        self._said_standing_by = False
        self._schedule: dict[str, ModelEntry] = {}
        self._names: dict[int, str] = {}  # task id → entry name
        self._fingerprints: dict[int, int] = {}  # task id → fingerprint of the loaded row
        self._crontabs: dict[tuple, TzAwareCrontab] = {}  # parsed crontabs, shared by the entries
        self._seen_change = None
        self._next_check = 0.0
        self._next_reconcile = 0.0
        self._heartbeat = BeatHeartbeat()
        super().__init__(*args, **kwargs)

    @property
    def schedule(self) -> dict[str, ModelEntry]:
        if self._initial_read:
            self._initial_read = False
            self._refresh(force=True)
        elif time.monotonic() >= self._next_check:
            self._refresh()
        return self._schedule

    def schedules_equal(self, *args, **kwargs) -> bool:
        """Always: each change patches the heap itself (see _apply), so tick never rebuilds it."""
        return True

    def setup_schedule(self) -> None:
        """Nothing yet: beat sets its schedule up when it takes the lead (see _take_over)."""

    def tick(self, event_t=event_t, min=min, heappop=heapq.heappop, heappush=heapq.heappush) -> float:
        """Send every report due now in one go, then tick as the parent does for anything else.

        Only as leader: a standby sends nothing and writes nothing, not even a heartbeat.
        """
        if not self._lead():
            return min(self.max_interval, max(0.1, self._next_leadership_check - time.monotonic()))
        self._heartbeat(tasks=len(self._schedule))  # for /healthz; writes at most every few seconds
        self.schedule  # noqa: B018 -- reading it follows the database, as the parent's tick does
        if self._heap is None:
            self.populate_heap()
        burst = self._pop_due_reports(event_t, heappop, heappush)
        if burst:
            self._send_reports(burst)
            return 0
        # Sleep no longer than the next look at the database (beat's max_interval is 5 s): an edit
        # is picked up within about CHANGE_CHECK_SECONDS, for one cheap query a second.
        until_next_check = max(0.05, self._next_check - time.monotonic())
        return min(super().tick(event_t, min, heappop, heappush), until_next_check)

    def apply_entry(self, entry: ModelEntry, producer=None) -> None:
        """A report that the parent's tick sends (e.g. due a moment after ours looked) goes as ours do."""
        if _is_report_entry(entry):
            self._send_reports([entry])
        else:
            super().apply_entry(entry, producer=producer)

    def populate_heap(self, event_t=event_t, heapify=heapq.heapify) -> None:
        self._heap = [self._event(entry) for entry in self._schedule.values()]
        heapify(self._heap)

    def reserve(self, entry: ModelEntry) -> ModelEntry:
        following = next(entry)
        if self._schedule.get(entry.name) is entry:
            self._schedule[entry.name] = following  # type: ignore[union-attr]
        self._dirty.add(entry.model.pk)
        return following

    def sync(self) -> None:
        dirty, self._dirty = self._dirty, set()
        tasks = [self._schedule[self._names[pk]].model for pk in dirty if pk in self._names]
        if not tasks:
            return
        try:
            close_old_connections()
            write_runs(tasks)
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("ReportScheduler: could not write %d last-run times, retrying later: %r", len(tasks), exc)
            self._dirty |= dirty

    def close(self) -> None:
        """Write the last runs, then let go of the lock: a standby leads at its next try."""
        try:
            super().close()
        finally:
            if self.leadership is not None:
                self.leadership.release()
            if self._leading:
                logger.info("beat: stepped down")
                self._leading = False
                self._forget_schedule()
            self._next_leadership_check = 0.0

    def update_from_dict(self, mapping) -> None:
        """Entries from the app's beat_schedule: stored as rows by the parent, indexed here."""
        super().update_from_dict(mapping)
        self._names.update((entry.model.pk, name) for name, entry in self._schedule.items())

    # --- leading ------------------------------------------------------------------------

    def _lead(self) -> bool:
        """Whether this beat leads now: checks the lock it holds, or tries to take it, every few seconds."""
        now = time.monotonic()
        if now < self._next_leadership_check:
            return self._leading
        self._next_leadership_check = now + LEADERSHIP_CHECK_SECONDS
        if self._leading:
            if self.leadership is None or self.leadership.still_held():
                return True
            logger.warning("beat: lost the lead (its lock is gone); standing by")
            self._leading = False
            self._forget_schedule()
            return False
        if self.leadership is None or self.leadership.try_acquire():
            logger.info("beat: now leading")
            self._take_over()
        elif not self._said_standing_by:
            logger.info("beat: standing by, another beat leads")
            self._said_standing_by = True
        return self._leading

    def _take_over(self) -> None:
        """Lead as a beat starting afresh does: the app's own entries stored, then every row read.

        The rows hold each task's last run as the previous leader wrote it, so that a slot it
        fired is not fired again, and a slot that fell due while nobody led fires now.
        """
        self._leading, self._said_standing_by = True, False
        self._forget_schedule()
        super().setup_schedule()

    def _forget_schedule(self) -> None:
        """Drop the schedule held in memory and the last runs not yet written: a standby holds and writes nothing."""
        self._schedule, self._names, self._fingerprints, self._crontabs = {}, {}, {}, {}
        self._heap, self.old_schedulers = None, None
        self._dirty = set()
        self._seen_change, self._next_check, self._next_reconcile = None, 0.0, 0.0
        self._initial_read = True

    # --- sending a burst ----------------------------------------------------------------

    def _pop_due_reports(self, event_t, heappop, heappush) -> list[ModelEntry]:
        """Take every report entry due now off the top of the heap, reserving each (as tick does)."""
        heap = self._heap
        due: list[ModelEntry] = []
        while heap and len(due) < MAX_BURST:
            when, priority, entry = heap[0]
            if not _is_report_entry(entry) or when > self._when(entry, 0):
                break
            try:
                is_due, next_time_to_run = self.is_due(entry)
            except Exception:  # the parent's tick reports and reschedules it
                break
            if not is_due:
                break
            heappop(heap)
            following = self.reserve(entry)
            heappush(heap, event_t(self._when(following, next_time_to_run), priority, following))
            due.append(entry)
        return due

    def _send_reports(self, entries: list[ModelEntry]) -> None:
        """Publish the due reports, grouped by their routing options, a batch per message."""
        fired_at = datetime.now(UTC).isoformat()
        groups: dict[str, tuple[dict, list[int]]] = {}
        for entry in entries:
            options = {key: value for key, value in entry.options.items() if key != "headers"}
            headers = {key: value for key, value in entry.options["headers"].items() if key != "periodic_task_name"}
            options["headers"] = headers | {"celery_beat_task": True}
            key = json.dumps(options, sort_keys=True, default=str)
            groups.setdefault(key, (options, []))[1].append(entry.kwargs["report_id"])
        messages = 0
        for options, report_ids in groups.values():
            size = batch_size(len(entries))
            for start in range(0, len(report_ids), size):
                batch = report_ids[start : start + size]
                kwargs = {"report_ids": batch, "fired_at": fired_at}
                try:
                    self.send_task(BATCH_TASK, kwargs=kwargs, producer=self.producer, **options)
                except Exception:  # as the parent's apply_entry: log it, beat goes on
                    logger.exception("ReportScheduler: could not send reports %s", batch)
                else:
                    messages += 1
        logger.info("ReportScheduler: sent %d due reports in %d messages", len(entries), messages)
        self._tasks_since_sync += len(entries)
        if self.should_sync():
            self._do_sync()

    # --- following the database -------------------------------------------------------

    def _refresh(self, *, force: bool = False) -> None:
        """Apply what changed in the database since the last look, if anything did."""
        now = time.monotonic()
        self._next_check = now + CHANGE_CHECK_SECONDS
        try:
            close_old_connections()
            _end_transaction()
            changed_at = self.Changes.last_change()
            if not force and changed_at == self._seen_change and now < self._next_reconcile:
                return
            self._apply(self._read_fingerprints())
        except (DatabaseError, InterfaceError) as exc:
            logger.warning("ReportScheduler: could not read the schedule, keeping the current one: %r", exc)
            return
        self._seen_change = changed_at
        # Also every few minutes without a signal: a bulk update() bumps no timestamp,
        # and the parent's window of hours lets crontab tasks in as the day moves on.
        self._next_reconcile = now + SCHEDULE_SYNC_MAX_INTERVAL

    def _read_fingerprints(self) -> dict[int, int]:
        rows = self.enabled_models_qs().prefetch_related(None).values_list("id", *FINGERPRINT_FIELDS)
        return {row[0]: hash(row[1:]) for row in rows.iterator(chunk_size=2000)}

    def _apply(self, fingerprints: dict[int, int]) -> None:
        started = time.perf_counter()
        gone = self._fingerprints.keys() - fingerprints.keys()
        changed = [pk for pk, fingerprint in fingerprints.items() if self._fingerprints.get(pk) != fingerprint]
        if not gone and not changed:
            return
        loaded = self._load(changed)
        outdated = gone | set(changed)  # a changed row not loaded was disabled meanwhile
        removed_names = {self._names[pk] for pk in outdated if pk in self._names}
        removed_names |= {entry.name for entry in loaded.values()}
        held = {pk: self._schedule.get(self._names.get(pk, "")) for pk in loaded}
        for pk in outdated:
            self._fingerprints.pop(pk, None)
            self._schedule.pop(self._names.pop(pk, ""), None)
        for pk, entry in loaded.items():
            _carry_over(held[pk], entry)
            self._add(pk, entry, fingerprints[pk])
        if len(self._crontabs) > 2 * len(self._schedule) + 100:  # schedules edited away: start the cache afresh
            self._crontabs = {}
        if self._heap is not None:
            heap = [event for event in self._heap if event[2].name not in removed_names]
            heap.extend(self._event(entry) for entry in loaded.values())
            heapq.heapify(heap)
            self._heap = heap
        logger.info(
            "ReportScheduler: %d tasks, %d reloaded, %d dropped in %.3f s",
            len(self._schedule),
            len(loaded),
            len(outdated) - len(loaded),
            time.perf_counter() - started,
        )

    def _load(self, pks: list[int]) -> dict[int, ModelEntry]:
        """Entries for the given enabled task ids, all of them at once on the first read."""
        queryset = self.enabled_models_qs().prefetch_related(None).select_related(*SCHEDULE_RELATIONS)
        if len(pks) > BATCH_SIZE * 4:  # e.g. the first read: one pass over all rows
            wanted = set(pks)
            models: Iterable[PeriodicTask] = (m for m in queryset.iterator(chunk_size=2000) if m.pk in wanted)
        else:
            batches = (pks[start : start + BATCH_SIZE] for start in range(0, len(pks), BATCH_SIZE))
            models = (model for batch in batches for model in queryset.filter(pk__in=batch))
        entries = {}
        for model in models:
            try:
                entries[model.pk] = self.Entry(model, app=self.app, crontabs=self._crontabs)
            except ValueError:  # a schedule celery cannot use; the parent skips it too
                logger.exception("ReportScheduler: skipping task %r", model.name)
        return entries

    def _add(self, pk: int, entry: ModelEntry, fingerprint: int) -> None:
        other = self._schedule.get(entry.name)
        if other is not None and other.model.pk != pk:  # renamed into a name another row just left
            self._names.pop(other.model.pk, None)
            self._fingerprints.pop(other.model.pk, None)
        self._schedule[entry.name] = entry
        self._names[pk] = entry.name
        self._fingerprints[pk] = fingerprint

    def _event(self, entry: ModelEntry) -> event_t:
        try:
            is_due, next_time_to_run = entry.is_due()
        except Exception:  # one broken entry must not stop beat; the parent does the same
            is_due, next_time_to_run = self._is_due_failed(entry)
        return event_t(self._when(entry, 0 if is_due else next_time_to_run) or 0, 5, entry)


@signals.beat_init.connect
def lead_by_the_database_lock(sender: Service, **_kwargs) -> None:
    """Celery's beat (`celery beat`, `worker --beat`) leads only while it holds the database's beat lock."""
    scheduler = sender.scheduler
    if isinstance(scheduler, ReportScheduler) and scheduler.leadership is None:
        scheduler.leadership = for_database()


def batch_size(due: int) -> int:
    """Reports per message when `due` fall due together: one each up to MESSAGES_PER_BURST, then more."""
    return min(MAX_REPORTS_PER_MESSAGE, math.ceil(due / MESSAGES_PER_BURST))


def _is_report_entry(entry: ModelEntry) -> bool:
    """A report's own task, as reporting.schedules writes it: its report id is all it carries."""
    return entry.task == RUN_TASK and not entry.args and set(entry.kwargs) == {"report_id"}


def _is_plain_row(model: Any) -> bool:
    """A row whose is_due never saves it or asks it for more: no start time, expiry or one-off."""
    return model.start_time is None and model.expires is None and not model.one_off


def _is_plain_crontab_row(model: PeriodicTask) -> bool:
    """A plain row on a crontab alone, read by ModelEntry into a TzAwareCrontab and fixed options."""
    return (
        model.crontab_id is not None
        and model.interval_id is None
        and model.solar_id is None
        and model.clocked_id is None
        and model.expire_seconds is None
        and _is_plain_row(model)
        and getattr(settings, "DJANGO_CELERY_BEAT_TZ_AWARE", True)
    )


def _shared_crontab(
    row: CrontabSchedule, crontabs: dict[tuple, TzAwareCrontab], *, slots: bool, app: Any
) -> TzAwareCrontab:
    """The parsed schedule of a CrontabSchedule row (as row.schedule), one per distinct schedule.

    Bound to beat's app (row.schedule's uses whichever is current): is_due reads its settings at every check.
    """
    fields = (row.minute, row.hour, row.day_of_week, row.day_of_month, row.month_of_year)
    key = (slots, *fields, str(row.timezone))
    schedule = crontabs.get(key)
    if schedule is None:
        names = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        kind = SlotCrontab if slots else TzAwareCrontab
        schedule = crontabs[key] = kind(**dict(zip(names, fields, strict=True)), tz=row.timezone, app=app)
    return schedule


def _carry_over(held: ModelEntry | None, fresh: ModelEntry) -> None:
    """Keep beat's own record of the last run when the row read back is older.

    Beat writes last_run_at every few minutes; a task saved in the admin meanwhile carries
    the older value, which would make beat fire a slot it already fired.
    """
    if held is None or not held.last_run_at or held.last_run_at <= fresh.last_run_at:
        return
    fresh.last_run_at = fresh.model.last_run_at = held.last_run_at
    fresh.total_run_count = fresh.model.total_run_count = max(held.total_run_count, fresh.total_run_count)


def write_runs(tasks: list[Any]) -> None:
    """Store each task's last_run_at and total_run_count; skip rows disabled or deleted; date_changed untouched.

    One UPDATE by primary key, executed for every row at once (executemany: one prepared statement
    on SQLite, a pipeline on PostgreSQL), in transactions of at most WRITE_BATCH rows, so that a
    write-back after a burst of 100,000 never holds the database's write lock for long. (A CASE
    over 500 ids per UPDATE, as before, compares each row with each id: 0.3 s per 1,000 rows.)
    """
    alias = router.db_for_write(PeriodicTask)
    meta, ops = PeriodicTask._meta, connections[alias].ops
    last_run_at, total_run_count, enabled = (
        meta.get_field(name).column for name in ("last_run_at", "total_run_count", "enabled")
    )
    sql = (
        f"UPDATE {ops.quote_name(meta.db_table)} SET {ops.quote_name(last_run_at)} = %s, "
        f"{ops.quote_name(total_run_count)} = %s WHERE {ops.quote_name(meta.pk.column)} = %s "
        f"AND {ops.quote_name(enabled)} = %s"
    )
    for start in range(0, len(tasks), WRITE_BATCH):
        rows = [
            (ops.adapt_datetimefield_value(task.last_run_at), task.total_run_count, task.pk, True)
            for task in tasks[start : start + WRITE_BATCH]
        ]
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            cursor.executemany(sql, rows)


def _end_transaction() -> None:
    """End an open transaction, if any: under MySQL's REPEATABLE READ it would hide others' commits."""
    with contextlib.suppress(transaction.TransactionManagementError):  # not in a transaction
        transaction.commit()
