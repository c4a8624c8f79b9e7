"""Hostile values on the wire: a handful of the values tests/test_translate.py checks purely, sent through
the function to one Bitbucket stand-in for the whole module, so that what the pure checks promise is
what reaches the server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from standins.bitbucket import Bitbucket, Server
from standins.builds import hostile_build
from tests.conftest import TOKEN, deliver
from tests.test_fuzz import ALLOWED_PATH

ON_THE_WIRE = [
    ("workspace", "../admin"),
    ("slug", "a%2Fb"),
    ("commit", "acme\r\nX-Injected: 1"),
    ("branch", "acme\r\nX-Injected: 1"),
    ("trigger", "//evil.example"),
    ("key", "a?x=1"),
    ("key", "x" * 10_000),
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    app = Bitbucket()
    app.accept_token(TOKEN)
    running = app.serve()
    yield running
    running.stop()


@pytest.fixture
def bitbucket(server, monkeypatch) -> Server:
    """The module's stand-in, emptied, with the function pointed at it."""
    server.app.calls.clear()
    server.app.statuses.clear()
    monkeypatch.setenv("BITBUCKET_API_URL", server.api_url)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": TOKEN}))
    return server


@pytest.mark.parametrize(("field", "value"), ON_THE_WIRE, ids=[f"{f}={v!r:.20}" for f, v in ON_THE_WIRE])
def test_a_hostile_value_reaches_only_a_commit_status_path_exactly_as_checked(bitbucket, field, value):
    deliver(hostile_build(field, value))
    for call in bitbucket.app.calls:
        assert ALLOWED_PATH.fullmatch(call.raw_uri), call.raw_uri
        assert call.path == call.raw_uri  # nothing percent-encoded: the path is exactly what was checked
        assert call.status in (200, 201) or (call.method, call.status) == ("GET", 404), call
    if field in ("workspace", "slug", "commit"):
        assert bitbucket.app.calls == []  # rejected, not escaped
    else:
        [status] = [c.body for c in bitbucket.app.calls if c.method == "POST"]
        assert len(status["key"]) <= 40
