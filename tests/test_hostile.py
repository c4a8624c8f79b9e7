"""Hostile values from a build's substitutions never change where a request goes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from standins.builds import COMMIT, build
from tests.conftest import deliver
from tests.test_fuzz import ALLOWED_PATH

HOSTILE = [
    "..", ".", "../admin", "..%2F..", "%2e%2e", "a/b", "a%2Fb", "a%252Fb", "a?x=1", "a#top", "a;b", "a&b=c",
    " acme", "acme ", "ac me", "acme\t", "acme\n", "acme\r\nX-Injected: 1", "acme\x00", "acme\x7f",
    "ａｃｍｅ", "аcme", "acme\u200b", "acme\u202e", "ACME…", "x" * 101, "x" * 10_000, "", "@acme", "acme:443",
    "//evil.example", "http://evil.example/", "\\\\evil", "~acme", "$(id)", "`id`", "acme/../..",
]  # fmt: skip
FIELDS = ["workspace", "slug", "commit", "branch", "trigger", "key"]


def hostile_build(field: str, value: str) -> dict:
    workspace, slug, commit, branch = "acme", "webapp", COMMIT, "main"
    b = build("SUCCESS", source="webhook", trigger_id=None)
    subs = b["substitutions"]
    if field == "workspace":
        workspace = value
    elif field == "slug":
        slug = value
    elif field == "commit":
        commit = value
    elif field == "branch":
        branch = value
    elif field == "trigger":
        subs["TRIGGER_NAME"] = value
    else:
        subs["_BITBUCKET_KEY"] = value
    subs.update(_BITBUCKET_REPO=f"{workspace}/{slug}", _BITBUCKET_COMMIT=commit, _BITBUCKET_BRANCH=branch)
    return b


def assert_only_commit_status_requests(bitbucket) -> None:
    for call in bitbucket.app.calls:
        assert ALLOWED_PATH.fullmatch(call.raw_uri), call.raw_uri
        assert call.path == call.raw_uri  # nothing percent-encoded: the path is exactly what was checked
        assert call.status in (200, 201) or (call.method, call.status) == ("GET", 404), call


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:30] for v in HOSTILE])
def test_hostile_values_reach_no_other_path(bitbucket, field, value):
    deliver(hostile_build(field, value))
    assert_only_commit_status_requests(bitbucket)
    if field in ("workspace", "slug", "commit") and value == value.strip():
        assert bitbucket.app.calls == []  # rejected, not escaped (surrounding whitespace is trimmed)
    if field in ("trigger", "key") and bitbucket.app.calls:
        [status] = [c.body for c in bitbucket.app.calls if c.method == "POST"]
        assert len(status["key"]) <= 40


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=st.text(min_size=1, max_size=300))
def test_any_text_in_any_field_reaches_no_other_path(bitbucket, field, value):
    deliver(hostile_build(field, value))
    assert_only_commit_status_requests(bitbucket)
