"""Cloud Build on the Jira issues it implements: the issue keys a build names (its branch, its commit's message,
_JIRA_ISSUES), what Jira is told of it (a build of a pipeline, a deployment to an environment), and, through the
Jira and Bitbucket stand-ins, what Jira ends up showing on each issue — after Bitbucket, never instead, whatever
order the messages arrive in and whatever Jira answers."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import permutations
from typing import Any

import pytest

import relay.config
import relay.errors
import relay.issue_keys
import relay.tracked
import relay.translate
from standins.builds import COMMIT, build
from tests.conftest import dc_build, deliver, log_lines, shown

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


# --- through the stand-ins: what each issue shows ------------------------------------------------------------------

BRANCH = "feature/ABC-123-login"


def lifecycle(build_id: str, order: tuple[str, ...] = ("QUEUED", "WORKING", "SUCCESS"), **kwargs: Any) -> None:
    for status in order:
        deliver(build(status, build_id, branch=BRANCH, **kwargs))


@pytest.fixture
def webapp(bitbucket, jira):
    """acme/webapp's commit names ABC-124 in its message; the Jira site `acme` is told of its builds."""
    bitbucket.app.commit_messages[("acme/webapp", COMMIT)] = "ABC-124: log in with SSO\n\nAlso tidies the form."
    jira.add_entry()
    return jira


@pytest.mark.parametrize("order", list(permutations(("QUEUED", "WORKING", "SUCCESS"))))
def test_a_build_shows_on_each_issue_it_names_once_with_its_final_state_in_any_order(webapp, bitbucket, order):
    lifecycle("b-1", order)

    for key in ("ABC-123", "ABC-124"):
        [shown_build] = webapp.builds(key)
        assert shown_build["state"] == "successful"
        assert set(shown_build["issueKeys"]) == {"ABC-123", "ABC-124"}
        assert shown_build["references"][0]["commit"]["id"] == COMMIT
        assert shown_build["references"][0]["ref"]["name"] == BRANCH
    assert webapp.app.invalid == []
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]
    assert len(bitbucket.app.commit_calls()) == 1  # the message, read once for the commit


def test_a_rerun_of_the_trigger_is_the_same_pipeline_with_a_greater_build_number(webapp):
    lifecycle("b-1", createTime="2026-11-27T09:00:00Z")
    lifecycle("b-2", createTime="2026-11-27T09:20:00Z")

    first, second = sorted(webapp.builds("ABC-123"), key=lambda b: b["buildNumber"])
    assert first["pipelineId"] == second["pipelineId"]
    assert second["buildNumber"] > first["buildNumber"]


def test_a_failed_build_with_junit_files_carries_its_test_counts(webapp, storage, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage.host)
    monkeypatch.setenv("TEST_REPORT_BUCKETS", "acme-test-reports")
    cases = '<testcase name="a"/><testcase name="b"><failure message="boom"/></testcase><testcase name="c"/>'
    storage.put("acme-test-reports", "jira/b-1/junit.xml", f"<testsuite>{cases}</testsuite>".encode())
    subs = {"_BITBUCKET_TEST_REPORTS": "gs://acme-test-reports/jira/b-1/", "COMMIT_SHA": COMMIT, "BRANCH_NAME": BRANCH}
    deliver(build("FAILURE", "b-1", branch=BRANCH, substitutions=subs))

    [failed] = webapp.builds("ABC-123")
    assert failed["state"] == "failed"
    assert failed["testInfo"] == {"totalNumber": 3, "numberPassed": 2, "numberFailed": 1, "numberSkipped": 0}


def test_with_jira_answering_503_bitbucket_shows_the_final_state_and_the_redelivery_puts_it_on_jira(webapp, bitbucket):
    lifecycle("b-1", ("QUEUED", "WORKING"))
    webapp.app.answer_next(503, 503, 503, 503, 503, to="builds")
    with pytest.raises(relay.errors.TransientError):
        deliver(build("SUCCESS", "b-1", branch=BRANCH))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]
    assert webapp.builds("ABC-123")[0]["state"] == "in_progress"
    writes = len([c for c in bitbucket.app.calls if c.method in ("POST", "PUT")])

    deliver(build("SUCCESS", "b-1", branch=BRANCH))  # Pub/Sub delivers it again

    assert webapp.builds("ABC-123")[0]["state"] == "successful"
    assert len([c for c in bitbucket.app.calls if c.method in ("POST", "PUT")]) == writes  # Bitbucket: written once


def test_a_build_naming_no_issue_sends_nothing_to_jira(bitbucket, jira):
    jira.add_entry()
    deliver(build("SUCCESS", "b-1", branch="main"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]
    assert jira.app.build_calls() == []
    assert jira.app.token_requests == 0


def test_a_repository_outside_a_jira_entrys_patterns_sends_nothing_to_it(bitbucket, jira):
    jira.add_entry(repositories=["acme/api"])
    lifecycle("b-1")
    assert jira.app.build_calls() == []


def test_one_token_and_one_site_lookup_serve_a_warm_instances_builds_and_neither_secret_nor_token_is_logged(
    webapp, capsys
):
    for n in range(3):
        lifecycle(f"b-{n}", createTime=f"2026-11-27T09:0{n}:00Z")
    assert (webapp.app.token_requests, webapp.app.tenant_info_requests) == (1, 1)
    assert len(webapp.builds("ABC-123")) == 3
    out = capsys.readouterr().out
    tokens = {a.partition(" ")[2] for a in webapp.app.authorizations if a}
    assert len(tokens) == 1
    assert [s for s in (webapp.client_secret, *tokens) if s in out] == []


def test_a_token_jira_stops_taking_is_fetched_again_once(webapp):
    lifecycle("b-1", ("QUEUED",))
    webapp.app.expire_tokens()
    lifecycle("b-1", ("WORKING", "SUCCESS"))
    assert webapp.app.token_requests == 2
    assert webapp.builds("ABC-123")[0]["state"] == "successful"


def test_a_refused_jira_credential_is_an_error_naming_the_entry_and_is_not_retried(bitbucket, jira, capsys):
    jira.app.accept_client(jira.client_id, jira.client_secret, permissions=("deployments",))  # no builds permission
    jira.add_entry()
    deliver(build("SUCCESS", "b-1", branch=BRANCH))  # acknowledged: no redelivery would mend it
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "ERROR"
    assert "Jira answered 403 to builds of Jira entry 2" in line["message"]
    assert "permission" in line["message"]
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_a_production_deployment_of_a_data_center_repository_shows_in_jira_and_on_the_commit(both, jira):
    both.app.commit_messages[("PROJ/repo", COMMIT)] = "ABC-123 ship it"
    jira.add_entry()
    subs = {"_DEPLOY_ENVIRONMENT": "production", "COMMIT_SHA": COMMIT}
    for status in ("QUEUED", "WORKING", "SUCCESS"):
        deliver(dc_build(status, both, substitutions=subs))

    [deployment] = jira.deployments("ABC-123")
    assert (deployment["state"], deployment["environment"]["type"]) == ("successful", "production")
    [on_commit] = both.app.deployments_for("PROJ", "repo", COMMIT)
    assert (on_commit["state"], on_commit["environment"]["key"]) == ("SUCCESSFUL", "production")
    assert on_commit["environment"]["type"] == "PRODUCTION"
    assert jira.app.invalid == []


def test_a_deployments_late_earlier_state_never_replaces_its_final_state_on_the_commit(both):
    """Without Jira too: the deployment is written with its status, so it never goes back either."""
    subs = {"_DEPLOY_ENVIRONMENT": "staging", "COMMIT_SHA": COMMIT}
    for status in ("QUEUED", "SUCCESS", "WORKING"):
        deliver(dc_build(status, both, substitutions=subs))
    [on_commit] = both.app.deployments_for("PROJ", "repo", COMMIT)
    assert (on_commit["state"], on_commit["environment"]["type"]) == ("SUCCESSFUL", "STAGING")
    deliver(dc_build("SUCCESS", both, substitutions=subs))  # delivered again: the same final state, written again
    assert [d["state"] for d in both.app.deployments_for("PROJ", "repo", COMMIT)] == ["SUCCESSFUL"]


def test_a_final_state_waits_for_its_commits_message_when_the_budget_leaves_no_call_to_read_it(
    webapp, bitbucket, new_instance
):
    """Jira ignores a state it was told already: told without the message's issue (ABC-124), it would never show the
    build. So the final state is delivered again, and told once the message can be read; Bitbucket has it first."""
    bitbucket.app.budget, bitbucket.app.near_limit_share = 1000, 0.001  # every answer says the budget is nearly spent
    deliver(build("WORKING", "b-1", branch=BRANCH))
    with pytest.raises(relay.errors.TransientError, match="commit's message"):
        deliver(build("SUCCESS", "b-1", branch=BRANCH))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]
    assert webapp.builds("ABC-124") == []

    bitbucket.app.near_limit_share = 0.8
    new_instance()  # the cooldown over (a new instance knows none)
    deliver(build("SUCCESS", "b-1", branch=BRANCH))
    assert [b["state"] for b in webapp.builds("ABC-124")] == ["successful"]
