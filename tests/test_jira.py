"""Cloud Build on the Jira issues it implements: the issue keys a build names (its branch, its commit's message,
_JIRA_ISSUES), what Jira is told of it (a build of a pipeline, a deployment to an environment), and, through the
Jira and Bitbucket stand-ins, what Jira ends up showing on each issue — after Bitbucket, never instead, whatever
order the messages arrive in and whatever Jira answers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import relay.config
import relay.issue_keys
import relay.tracked
import relay.translate
from standins.builds import build

# --- which issues: pure --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("branch", "named", "message", "keys"),
    [
        ("feature/ABC-123-login", "", "ABC-124: log in with SSO", ("ABC-123", "ABC-124")),
        ("feature/abc-123-login", "", "", ("ABC-123",)),  # a branch's key in any case, upper-cased
        ("main", "ops-7, OPS-8 ABC-123", "Merge ABC-123", ("OPS-7", "OPS-8", "ABC-123")),
        ("release/2.0", "", "bump sha-256 and utf8-2x; see ABC-9x", ()),  # prose: lower case, or inside a word
        ("fix/ABC-123", "", "ABC-123 ABC-123", ("ABC-123",)),  # each once
        ("ABC_DEF-1-x", "", "", ("ABC_DEF-1",)),
    ],
)
def test_a_builds_issue_keys_come_from_its_branch_its_commits_message_and_jira_issues(branch, named, message, keys):
    subs = {"_JIRA_ISSUES": named} if named else {}
    found = relay.issue_keys.issue_keys(
        relay.issue_keys.named_keys(build("SUCCESS", substitutions=subs), branch),
        relay.issue_keys.message_keys(message),
    )
    assert found == keys


def test_at_most_a_hundred_issue_keys_and_a_long_message_is_read_only_in_part():
    many = " ".join(f"ABC-{n}" for n in range(300))
    assert len(relay.issue_keys.issue_keys(relay.issue_keys.message_keys(many))) == 100
    assert relay.issue_keys.message_keys("x" * 5000 + " ABC-1") == []


# --- what Jira is told: pure ---------------------------------------------------------------------------------------


def tracked(status: str, **kwargs: object) -> relay.tracked.TrackedBuild:
    made = build(status, **kwargs)
    update = relay.translate.translate(made, relay.config.Config())
    assert isinstance(update, relay.translate.Update)
    found = relay.tracked.tracked_build(update, made, ("ABC-123",), "https://bitbucket.org/acme/webapp", None)
    assert found is not None
    return found


def test_a_builds_states_only_grow_in_jira_and_a_later_build_has_a_greater_number():
    states = [tracked(s) for s in ("PENDING", "QUEUED", "WORKING", "SUCCESS")]
    assert [t.state for t in states] == ["pending", "pending", "in_progress", "successful"]
    assert [t.sequence for t in states] == sorted({t.sequence for t in states})  # strictly growing
    assert len({(t.pipeline_id, t.number) for t in states}) == 1  # one build
    later = tracked("QUEUED", createTime="2026-11-27T09:30:00Z")
    assert (later.pipeline_id, later.number > states[0].number) == (states[0].pipeline_id, True)
    assert [tracked(s).state for s in ("FAILURE", "TIMEOUT", "CANCELLED", "EXPIRED")] == [
        "failed", "failed", "cancelled", "cancelled"
    ]  # fmt: skip


def test_a_build_number_is_its_create_time_in_milliseconds():
    assert relay.tracked.build_number(datetime(2026, 11, 27, 9, 0, tzinfo=UTC), "b") == 1_795_770_000_000
    assert relay.tracked.build_number(None, "b-1") == relay.tracked.build_number(None, "b-1")


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        ("production", "", "production"),
        ("prod-eu", "", "production"),
        ("preprod", "", "staging"),
        ("staging", "", "staging"),
        ("qa", "", "testing"),
        ("dev-sandbox", "", "development"),
        ("canary", "", "unmapped"),
        ("canary", "production", "production"),
        ("eu-west", "nonsense", "unmapped"),
    ],
)
def test_an_environments_type_is_named_or_implied_by_its_name(name, kind, expected):
    subs = {"_DEPLOY_ENVIRONMENT": name, **({"_DEPLOY_ENVIRONMENT_TYPE": kind} if kind else {})}
    environment = relay.tracked.environment_of(build("SUCCESS", substitutions=subs))
    assert environment == relay.tracked.Environment(name, expected)
    assert relay.tracked.environment_of(build("SUCCESS")) is None
