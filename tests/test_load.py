"""One instance carries many events at once: functions-framework serving main.py as deployed (THREADS equal
to the concurrency), Pub/Sub push requests from as many senders, a Bitbucket that takes a real site's round
trip to answer. `make bench` measures the same at length (the load and backlog rows)."""

from __future__ import annotations

import json

import pytest

from standins.bitbucket import Bitbucket
from standins.builds import build, push_body
from standins.load import push_all
from standins.processes import FunctionServer
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
