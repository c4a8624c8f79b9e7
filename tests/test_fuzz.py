"""Fuzzing the function with Pub/Sub messages: real samples mutated field by
field, random JSON, wrong types, huge strings, unicode, missing and null fields,
invalid base64. `make fuzz` runs 100,000 examples; `make test` a short run.

Whatever arrives: nothing escapes but a request for redelivery (and against a
healthy Bitbucket, not even that); every message leaves exactly one log line
with a reason; a message that is not reported sends no request; and every
request that does leave goes to a commit-status endpoint of a validly named
repository and a 40-hex commit.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import main
import relay.errors
from standins.builds import COMMIT, Context, build, connected_repository, encode, sample
from standins.datacenter import DataCenter
from standins.processes import free_port
from tests.conftest import TOKEN

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
# A commit's build statuses, or the function's own Code Insights report; never a key of dots alone (`.` and `..` are
# path segments a URL normaliser removes, and the status read would go to another path).
ALLOWED_PATH = re.compile(
    r"/2\.0/repositories/[A-Za-z0-9_][A-Za-z0-9_-]*/[A-Za-z0-9_][A-Za-z0-9._-]*"
    r"/commit/[0-9a-f]{40}/(?:statuses/build(?:/(?!\.+$)[A-Za-z0-9._-]{1,40})?|reports/cloud-build-[A-Za-z0-9._-]{1,40})"
)
SERVER_PATH = re.compile(
    r"/bitbucket/rest/(?:api|insights)/latest/projects/(?:[A-Z][A-Z0-9_]*|~[A-Za-z0-9_][A-Za-z0-9_.-]*)"
    r"/repos/[A-Za-z0-9_][A-Za-z0-9._-]*/commits/[0-9a-f]{40}"
    r"/(?:builds(?:\?key=(?!\.+$)[A-Za-z0-9._-]{1,255})?|reports/cloud-build-[A-Za-z0-9._-]{1,243})"
)
SERVER = f"http://127.0.0.1:{free_port()}/bitbucket"  # a Data Center server, served by the `server` fixture


def server_builds(status: str) -> list[dict[str, Any]]:
    """A Data Center build found each of the three ways: clone URL, substitutions, connected repository."""
    cloned = build(status, source="git")
    cloned["source"]["gitSource"]["url"] = f"{SERVER}/scm/proj/service.git"
    named = build(status, source="webhook", repo="PROJ/service")
    named["substitutions"]["_BITBUCKET_SERVER"] = SERVER
    return [cloned, named, build(status, source="connection", repo="PROJ/service")]


SEEDS = [
    sample("bitbucket-mirror-branch"),
    sample("github-app-storage-source"),
    sample("trigger-substitutions-partial"),
    *(build(status, source=source) for source in ("connection", "git", "mirror", "webhook")
      for status in ("QUEUED", "WORKING", "SUCCESS", "FAILURE")),
    *(b for status in ("QUEUED", "WORKING", "SUCCESS", "CANCELLED") for b in server_builds(status)),
]  # fmt: skip
FIELDS = (
    "logUrl", "startTime", "finishTime", "buildTriggerId", "statusDetail",
    "substitutions._BITBUCKET_REPO", "substitutions._BITBUCKET_COMMIT", "substitutions._BITBUCKET_BRANCH",
    "substitutions._BITBUCKET_KEY", "substitutions._BITBUCKET_SERVER", "substitutions.TAG_NAME",
    "substitutions.COMMIT_SHA", "substitutions.BRANCH_NAME", "source.connectedRepository.repository",
    "substitutions.TRIGGER_NAME", "substitutions.REPO_FULL_NAME", "substitutions",
    "source.repoSource.repoName", "source.repoSource.branchName", "source.gitSource.url", "source",
    "sourceProvenance.resolvedRepoSource.commitSha", "sourceProvenance", "failureInfo.detail", "failureInfo",
    "status", "id",
)  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
nasty_strings = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1),
    st.sampled_from(["", " ", "../..", "a/b", "%2F", "\x00", "\u202e", "ａｃｍｅ/webapp", "acme/web app", "x" * 5000]),
    st.builds(lambda n: "y" * n, st.integers(255, 100_000)),
)


def mutate(document: dict[str, Any], path: str, value: Any, delete: bool) -> dict[str, Any]:
    document = json.loads(json.dumps(document))
    *parents, last = path.split(".")
    node = document
    for name in parents:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    if delete:
        node.pop(last, None)
    else:
        node[last] = value
    return document


def renamed(document: dict[str, Any], build_id: str, commit: str) -> dict[str, Any]:
    """A seed as another build of another commit, so that it is news to a warm instance."""
    document = json.loads(json.dumps(document).replace(COMMIT, commit))
    document["id"] = build_id
    if isinstance(document.get("substitutions"), dict):
        document["substitutions"]["COMMIT_SHA"] = commit
    return document


mutation = (st.sampled_from(FIELDS), st.one_of(st.none(), json_values, nasty_strings), st.booleans())
mutated_builds = st.builds(mutate, st.sampled_from(SEEDS), *mutation)
fresh_builds = st.builds(
    mutate,
    st.builds(renamed, st.sampled_from(SEEDS), st.uuids().map(str), st.from_regex(r"[0-9a-f]{40}", fullmatch=True)),
    *mutation,
)
valid_messages = st.one_of(st.builds(encode, fresh_builds), st.builds(encode, mutated_builds))
invalid_messages = st.one_of(
    st.builds(lambda b: encode(json.dumps(b).encode()), json_values),  # random JSON
    st.builds(lambda b: base64.b64encode(b).decode(), st.binary(max_size=200)),  # not JSON
    st.text(max_size=200),  # mostly not base64
    st.none(),
    json_values,  # not even a string
)
# Most examples are Cloud Build messages with one field changed; the rest are not messages at all.
raw_data = st.one_of(valid_messages, valid_messages, valid_messages, invalid_messages)

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


# What each site legitimately answers each request the function sends: the documented answer, and 404 where what
# is asked for may not be there (a status read before it is written; the function's own report, deleted before it is
# replaced, that was never written). Any other answer is a request the function should not have sent.
CLOUD_ANSWERS = (
    ("GET", r".*/statuses/build/[^/]+", {200, 404}),
    ("POST", r".*/statuses/build", {200, 201}),  # 201 created, 200 overwritten
    ("PUT", r".*/reports/[^/]+", {200}),
    ("DELETE", r".*/reports/[^/]+", {204, 404}),
    ("POST", r".*/reports/[^/]+/annotations", {200}),
)
SERVER_ANSWERS = (
    ("GET", r".*/builds", {200, 404}),  # ?key=
    ("POST", r".*/builds", {200, 204}),  # documented 204; some servers answer 200
    ("PUT", r".*/reports/[^/]+", {200}),
    ("DELETE", r".*/reports/[^/]+", {204, 404}),
    ("POST", r".*/reports/[^/]+/annotations", {204}),
)


def legitimate(answers: tuple[tuple[str, str, set[int]], ...], method: str, path: str) -> set[int]:
    """The answers a site may give to `method` on `path` (none, for a request the table does not know)."""
    return next((codes for m, pattern, codes in answers if m == method and re.fullmatch(pattern, path)), set())


SERVER_TOKEN = "fuzz-data-center-token-nwmEvbGd1vhNTQ-RWeaZKFm3"  # the Data Center entry's


@pytest.fixture
def server(bitbucket, google, monkeypatch) -> Iterator[DataCenter]:
    """A Data Center server beside Bitbucket Cloud, one entry of the credentials each."""
    app = DataCenter()
    app.accept_token(SERVER_TOKEN)
    running = app.serve(int(SERVER.split(":")[2].split("/")[0]))
    google.app.repositories[connected_repository("PROJ/service")] = f"{SERVER}/scm/proj/service.git"
    document = [{"token": TOKEN}, {"server": SERVER, "token": SERVER_TOKEN}]
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    yield app
    running.stop()


@FUZZ_SETTINGS
@given(data=raw_data)
def test_any_message_leaves_one_reasoned_log_line_and_sends_only_valid_requests(bitbucket, server, data):
    before, server_before = len(bitbucket.app.calls), len(server.calls)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main.build_status({"data": data}, Context())
    calls = bitbucket.app.calls[before:]
    server_calls = server.calls[server_before:]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    # Once per instance, a connected repository Cloud Build's API does not know is said in a line of its own.
    lines = [line for line in lines if not line["message"].startswith("Cloud Build's API could not say")]
    assert len(lines) == 1, lines
    [line] = lines
    assert line["severity"] in ("INFO", "WARNING", "ERROR")
    assert len(line["message"]) > 10
    event(line["message"].split(":")[0][:60])
    if not line["message"].startswith(("Posted", "Did not post")):
        assert calls == [], (line, calls)
        assert server_calls == [], (line, server_calls)
    for call in calls:
        assert ALLOWED_PATH.fullmatch(call.raw_uri), call.raw_uri
        assert call.status in legitimate(CLOUD_ANSWERS, call.method, call.path), (call, line)
    if server_calls:
        event("sent to the Data Center server")
    for call in server_calls:
        assert SERVER_PATH.fullmatch(call.raw_uri), call.raw_uri
        assert call.status in legitimate(SERVER_ANSWERS, call.method, call.path), (call, line)


@settings(FUZZ_SETTINGS, max_examples=max(100, EXAMPLES // 20))  # each example waits on injected faults
@given(data=raw_data)
def test_only_a_transient_bitbucket_failure_asks_for_redelivery(bitbucket, monkeypatch, data):
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "0.1")
    bitbucket.app.fault_rate = 0.8
    bitbucket.app.fault_delay = 0.2
    before = len(bitbucket.app.calls)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            main.build_status({"data": data}, Context())
    except relay.errors.TransientError:
        faults = [call.fault for call in bitbucket.app.calls[before:]]
        assert faults, "a redelivery was asked for without any failed call"
        assert faults[-1] is not None
