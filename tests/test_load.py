"""One instance carries many events at once: functions-framework serving main.py as deployed (THREADS equal
to the concurrency), Pub/Sub push requests from as many senders, a Bitbucket that takes a real site's round
trip to answer. `make bench` measures the same at length (the load and backlog rows)."""

from __future__ import annotations

import contextlib
import io
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

import main
import relay.warm
from standins.bitbucket import Bitbucket
from standins.builds import Context, background_event, build, push_body
from standins.load import push_all
from standins.processes import FunctionServer, KeepAliveStandin
from tests.conftest import TOKEN

ROUND_TRIP = 0.15  # seconds, each answer of the stand-in
EVENTS = 80


@pytest.fixture
def slow_bitbucket():
    app = Bitbucket(validate=False, latency=ROUND_TRIP)
    app.accept_token(TOKEN)
    server = app.serve()
    yield server
    server.stop()


def test_80_events_of_80_repositories_at_once_take_about_one_round_trip_not_80(slow_bitbucket, tmp_path):
    env = {
        "BITBUCKET_API_URL": slow_bitbucket.api_url,
        "BITBUCKET_CREDENTIALS": json.dumps({"token": TOKEN}),
        "THREADS": str(EVENTS),
        "CODE_INSIGHTS": "off",  # each event: a read and a write, two round trips
    }
    function = FunctionServer("build_status_cloudevent", "cloudevent", env, tmp_path / "function.log")
    try:
        push_all(function.url, [push_body(build("SUCCESS", "warm-up", repo="acme/warm-up"))], 1)  # a warm instance
        bodies = [push_body(build("SUCCESS", f"b-{n}", repo=f"acme/service-{n}")) for n in range(EVENTS)]
        wall, _ = push_all(function.url, bodies, EVENTS)
    finally:
        function.stop()
    landed = [
        r
        for r in range(EVENTS)
        if slow_bitbucket.app.shown("acme", f"service-{r}", build()["substitutions"]["COMMIT_SHA"])
    ]
    assert len(landed) == EVENTS
    # one after another: 80 x 2 round trips (24 s); four at a time (the framework's default on one vCPU): 6 s
    assert wall < 10 * ROUND_TRIP, f"{EVENTS} events took {wall:.2f} s"


def test_an_instance_keeps_a_connection_for_each_event_at_once_and_opens_none_after_the_first_round(
    tmp_path, monkeypatch
):
    """THREADS events at once against a site that keeps connections open (gunicorn): the first round opens up to
    one connection each, every later round reuses them (urllib3's default pool of 10 would discard the rest),
    and the table of per-status locks is empty once the events are done."""
    site = KeepAliveStandin(TOKEN, tmp_path / "standin.log", latency=0.2, threads=EVENTS)
    try:
        monkeypatch.setenv("BITBUCKET_API_URL", site.api_url)
        monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": TOKEN}))
        monkeypatch.setenv("THREADS", str(EVENTS))
        monkeypatch.setenv("CODE_INSIGHTS", "off")
        site.connections()  # the counters' own connection
        opened = []
        for round_ in range(2):
            before = site.connections()
            commit = f"{round_ + 1:040x}"
            events = [background_event(build("SUCCESS", f"r{round_}-{n}", repo=f"acme/s-{n}", commit=commit))
                      for n in range(EVENTS)]  # fmt: skip
            with ThreadPoolExecutor(EVENTS) as pool, contextlib.redirect_stdout(io.StringIO()):
                list(pool.map(lambda event: main.build_status(event, Context()), events))
            opened.append(site.connections() - before)
            assert relay.warm.instance is not None
            assert relay.warm.instance.reporter.memory.identities_locked() == 0
    finally:
        site.stop()
    assert opened[0] > 10, opened  # the events ran at once
    assert opened[1:] == [0], opened
