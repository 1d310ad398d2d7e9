"""/healthz and the heartbeats behind it: beat from its tick, each worker from its own timer."""

import time
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from project.celery import app as celery_app
from reporting import health
from reporting.beat import ReportScheduler
from reporting.models import Heartbeat

pytestmark = pytest.mark.django_db


def beat_seen(seconds_ago: float) -> None:
    Heartbeat.objects.update_or_create(
        name="beat", defaults={"seen_at": timezone.now() - timedelta(seconds=seconds_ago)}
    )


def test_it_answers_200_with_each_check_when_all_is_well(client):
    beat_seen(5)
    Heartbeat.objects.create(name="worker:celery@alpha", seen_at=timezone.now() - timedelta(seconds=3))

    response = client.get("/healthz")

    body = response.json()
    assert response.status_code == 200 and body["status"] == "ok"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["beat"]["ok"] is True and 4 <= body["checks"]["beat"]["age_seconds"] <= 60
    assert [worker["name"] for worker in body["checks"]["workers"]] == ["worker:celery@alpha"]
    assert response["Cache-Control"].startswith("max-age=0")


def test_a_silent_beat_fails_it_with_the_age_in_words(client):
    beat_seen(600)

    response = client.get("/healthz")

    assert response.status_code == 503
    beat = response.json()["checks"]["beat"]
    assert beat["ok"] is False and beat["error"].startswith("Beat has been silent for 6")


def test_a_beat_that_never_ran_fails_it(client):
    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["beat"]["error"] == "Beat has never recorded a heartbeat: is it running?"


def test_an_unreachable_broker_fails_it(client, settings):
    beat_seen(1)
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://127.0.0.1:9/0"  # nothing listens there
    try:
        response = client.get("/healthz")
    finally:
        celery_app.conf.broker_url = previous

    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {
        "ok": False,
        "error": "The message broker is unreachable: OperationalError.",
    }


def test_an_unreachable_database_is_reported_in_words(monkeypatch):
    from django.db import OperationalError, connection

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    healthy, report = health.health()

    assert healthy is False
    assert report["checks"]["database"] == {"ok": False, "error": "The database is unreachable: OperationalError."}


def test_it_answers_only_get(client):
    assert client.post("/healthz").status_code == 405


def test_beat_writes_its_heartbeat_from_its_tick_at_most_every_few_seconds(transactional_db):
    scheduler = ReportScheduler(app=celery_app)

    scheduler.tick()
    first = Heartbeat.objects.get(name="beat").seen_at
    scheduler.tick()

    assert Heartbeat.objects.get(name="beat").seen_at == first  # rate-limited
    assert timezone.now() - first < timedelta(seconds=5)


def test_a_worker_writes_its_heartbeat(transactional_db):
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as worker:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not Heartbeat.objects.filter(name__startswith="worker:").exists():
            time.sleep(0.1)

    [beat] = Heartbeat.objects.filter(name__startswith="worker:")
    assert beat.name == f"worker:{worker.hostname}"
    assert beat.detail["pid"] > 0
