"""Cloud Build on the Jira issues it implements: the issue keys a build names (its branch, its commit's message,
_JIRA_ISSUES), what Jira is told of it (a build of a pipeline, a deployment to an environment), and, through the
Jira and Bitbucket stand-ins, what Jira ends up showing on each issue — after Bitbucket, never instead, whatever
order the messages arrive in and whatever Jira answers."""

from __future__ import annotations

import json
import secrets
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import permutations
from typing import Any

import pytest

import main
import relay.config
import relay.errors
import relay.issue_keys
import relay.tracked
import relay.translate
from standins import remember_secret
from standins.builds import COMMIT, Context, background_event, build
from standins.jira import Raw
from tests.conftest import TOKEN, dc_build, deliver, log_lines, shown

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


@pytest.mark.parametrize("where", ["message", "_JIRA_ISSUES"])
def test_a_key_the_read_limit_cuts_names_no_other_issue(where):
    """ABC-123456 cut to ABC-1 would put the build on an unrelated issue."""
    text = "x" * (relay.issue_keys.TEXT_READ - 13) + " ABC-12 ABC-123456"  # the read ends at ABC-1
    if where == "message":
        assert relay.issue_keys.message_keys(text) == ["ABC-12"]
    else:
        named = build("SUCCESS", substitutions={"_JIRA_ISSUES": text})
        assert relay.issue_keys.named_keys(named, None) == ("ABC-12",)


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
        ("delivery-sandbox", "", "development"),  # "live" inside "delivery" is no production
        ("product-catalog-dev", "", "development"),  # nor "prod" inside "product"
        ("evaluation", "", "unmapped"),
        ("olive-test", "", "testing"),
        ("prod.eu", "", "production"),
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


# --- what a build carries, and what Jira answers: hostile values --------------------------------------------------


def test_a_commits_long_message_is_kept_only_as_far_as_it_is_searched(bitbucket, jira):
    jira.add_entry()
    deliver(build("WORKING", "b-0", branch=BRANCH, commit="0" * 40))  # the clients made
    for n in range(1, 4):
        bitbucket.app.commit_messages[("acme/webapp", f"{n}" * 40)] = f"ABC-124 {'x' * 10_000_000}"
    tracemalloc.start()
    for n in range(1, 4):
        deliver(build("WORKING", f"b-{n}", branch=BRANCH, commit=f"{n}" * 40, createTime=f"2026-11-27T09:0{n}:00Z"))
    kept, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert kept < 1_000_000  # of three 10 MB messages
    assert len(jira.builds("ABC-124")) == 3  # each message read all the same


def test_an_overlong_key_in_jira_issues_costs_the_build_none_of_its_other_keys(bitbucket, jira):
    jira.add_entry()
    subs = {"_JIRA_ISSUES": f"{'A' * 256}-1, ABC-124", "BRANCH_NAME": BRANCH}
    deliver(build("SUCCESS", "b-1", branch=BRANCH, substitutions=subs))
    assert jira.app.invalid == []
    [told] = jira.builds("ABC-123")
    assert sorted(told["issueKeys"]) == ["ABC-123", "ABC-124"]


@pytest.mark.parametrize("environment", ["prod.eu", "eu/west", "..", "E" * 300, "prod\nuction\u202e", "ünïcode-prod"])
def test_any_environment_a_build_names_is_a_valid_deployment_in_jira_and_on_the_commit(both, jira, environment):
    both.app.commit_messages[("PROJ/repo", COMMIT)] = "ABC-123 ship it"
    jira.add_entry(server=both.url)
    subs = {"_DEPLOY_ENVIRONMENT": environment, "COMMIT_SHA": COMMIT}
    for status in ("WORKING", "SUCCESS"):
        deliver(dc_build(status, both, substitutions=subs))
    assert jira.app.invalid == []
    [in_jira] = jira.deployments("ABC-123")
    [on_commit] = both.app.deployments_for("PROJ", "repo", COMMIT)
    assert (in_jira["state"], on_commit["state"]) == ("successful", "SUCCESSFUL")


@pytest.mark.parametrize("secret_in", ["the credential", "a substitution", "a secret's substitution"])
def test_an_environment_holding_a_secret_reaches_neither_jira_nor_the_commit_nor_the_log(both, jira, capsys, secret_in):
    both.app.commit_messages[("PROJ/repo", COMMIT)] = "ABC-123 ship it"
    jira.add_entry(server=both.url)
    secret = TOKEN if secret_in == "the credential" else "Zx9-deploy-password-Qw3rTy-77aa-" + secret_in[:3]
    subs = {"_DEPLOY_ENVIRONMENT": secret, "COMMIT_SHA": COMMIT}
    b = dc_build("SUCCESS", both, substitutions=subs)
    if secret_in == "a substitution":
        b["substitutions"]["_DB_PASSWORD"] = secret
    if secret_in == "a secret's substitution":
        b["availableSecrets"] = {"secretManager": [{"versionName": "projects/p/secrets/s/versions/1", "env": "X"}]}
        b["substitutions"]["_SECRET_ENV"] = secret
    deliver(b)
    sent = {"log": capsys.readouterr().out, "jira": json.dumps([c.body for c in jira.app.calls]),
            "data center": json.dumps([c.body for c in both.app.calls])}  # fmt: skip
    assert [where for where, text in sent.items() if secret in text] == []
    assert jira.deployments("ABC-123")  # told, masked


@pytest.mark.parametrize("site", ["Cloud", "Data Center"])
def test_a_jira_entry_for_one_bitbucket_site_is_not_told_of_a_repository_of_the_same_name_on_another(both, jira, site):
    both.app.commit_messages[("PROJ/repo", COMMIT)] = "ABC-123 ship it"
    if site == "Cloud":
        jira.add_entry(repositories=["proj/*"], server="https://bitbucket.org")  # bitbucket.org/proj/..., not PROJ
        deliver(dc_build("SUCCESS", both, substitutions={"COMMIT_SHA": COMMIT}))
    else:
        jira.add_entry(server=both.url)
        deliver(build("SUCCESS", "b-1", branch=BRANCH))
    assert jira.app.build_calls() == []


def test_a_jira_entry_of_other_projects_is_never_told(bitbucket, jira):
    jira.add_entry(projects=["team-b-ci"])
    deliver(build("SUCCESS", "b-1", branch=BRANCH))
    assert (jira.app.build_calls(), jira.app.token_requests) == ([], 0)


def delivered_from(project: str, b: dict[str, Any]) -> None:
    """As the runtime delivers a message published to `project`'s cloud-builds topic (the project it speaks for)."""
    context = Context()
    context.resource = {"service": "pubsub.googleapis.com", "name": f"projects/{project}/topics/cloud-builds"}
    main.build_status(background_event(b), context)


def test_a_jira_entry_of_one_teams_project_is_told_of_that_teams_builds_and_never_of_another_teams(bitbucket, jira):
    """One relay for two teams' projects, one Jira site of team A's: team A's builds show on its issues, team B's
    builds of the same repository never reach team A's Jira."""
    jira.add_entry(projects=["team-a"])
    for project in ("team-b", "team-a"):
        b = build("SUCCESS", f"{project}-build", branch=BRANCH)
        b["projectId"] = b["substitutions"]["PROJECT_ID"] = project
        delivered_from(project, b)
    assert [shown_build["url"].rpartition("/")[2].partition("?")[0] for shown_build in jira.builds("ABC-123")] == [
        "team-a-build"
    ]


def test_a_jira_entry_naming_its_cloud_id_is_told_without_asking_the_site_for_it(bitbucket, jira):
    jira.add_entry(cloud_id=jira.cloud_id)
    lifecycle("b-1")
    assert [shown_build["state"] for shown_build in jira.builds("ABC-123")] == ["successful"]
    assert jira.app.tenant_info_requests == 0


def test_an_older_builds_deployment_is_not_left_in_progress_on_the_commit(both):
    subs = {"_DEPLOY_ENVIRONMENT": "production", "COMMIT_SHA": COMMIT}
    first, second = {"createTime": "2026-11-27T09:00:00Z"}, {"createTime": "2026-11-27T09:10:00Z"}
    deliver(dc_build("WORKING", both, "b-1", substitutions=subs, **first))
    deliver(dc_build("WORKING", both, "b-2", substitutions=subs, **second))
    deliver(dc_build("FAILURE", both, "b-1", substitutions=subs, **first))
    deliver(dc_build("SUCCESS", both, "b-2", substitutions=subs, **second))
    states = sorted(
        (d["deploymentSequenceNumber"], d["state"]) for d in both.app.deployments_for("PROJ", "repo", COMMIT)
    )
    assert [state for _, state in states] == ["FAILED", "SUCCESSFUL"]


# --- redelivery: Bitbucket written once, every entry told -------------------------------------------------------


def test_after_a_jira_outage_the_redelivery_writes_the_data_center_deployment_once(both, jira):
    both.app.commit_messages[("PROJ/repo", COMMIT)] = "ABC-123 ship it"
    jira.add_entry(server=both.url)
    subs = {"_DEPLOY_ENVIRONMENT": "production", "COMMIT_SHA": COMMIT}
    jira.app.answer_next(503, 503, 503, 503, 503, to="builds")
    with pytest.raises(relay.errors.TransientError):
        deliver(dc_build("SUCCESS", both, substitutions=subs))
    written = len(both.app.deployment_calls())
    for _ in range(3):  # Pub/Sub delivers it again
        deliver(dc_build("SUCCESS", both, substitutions=subs))
    assert len(both.app.deployment_calls()) == written
    assert [d["state"] for d in jira.deployments("ABC-123")] == ["successful"]


@pytest.mark.parametrize("instance", ["warm", "cold"])
def test_a_jira_outage_costs_bitbucket_no_write_per_redelivery(bitbucket, jira, new_instance, capsys, instance):
    jira.add_entry()
    deliver(build("WORKING", "b-1", branch=BRANCH))
    before = len(bitbucket.app.calls)
    for _ in range(4):
        if instance == "cold":
            new_instance()  # Pub/Sub's redelivery reaches another instance
        jira.app.answer_next(503, 503, 503, 503, 503, to="api")
        with pytest.raises(relay.errors.TransientError):
            deliver(build("SUCCESS", "b-1", branch=BRANCH))
    calls = bitbucket.app.calls[before:]
    writes = [(c.method, c.path.split("/")[-2]) for c in calls if c.method != "GET"]
    assert [w for w in writes if w[0] != "DELETE"] == [("POST", "statuses"), ("PUT", "reports")]
    reads = len(calls) - len(writes)
    assert reads <= (0 if instance == "warm" else 3 * 4)  # a cold instance reads the status, report and message
    said, retry = log_lines(capsys.readouterr().out)[-2:]  # what Bitbucket shows, then why it is delivered again
    assert retry["severity"] == "WARNING"
    if instance == "cold":  # a warm instance knows it wrote the report, and says nothing of it
        assert said["report"] == "written"
        assert "report already written" in said["message"]


def test_a_final_state_jira_missed_reaches_it_whatever_the_order_of_the_redeliveries(bitbucket, jira, new_instance):
    jira.add_entry()
    deliver(build("QUEUED", "b-1", branch=BRANCH))
    jira.app.answer_next(503, 503, 503, 503, 503, to="builds")
    deliver(build("WORKING", "b-1", branch=BRANCH))  # said, and acknowledged: a later state tells Jira
    deliver(build("SUCCESS", "b-1", branch=BRANCH))
    new_instance()
    deliver(build("WORKING", "b-1", branch=BRANCH))  # late, on a new instance
    deliver(build("QUEUED", "b-1", branch=BRANCH))
    assert [b["state"] for b in jira.builds("ABC-123")] == ["successful"]
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_an_entry_jira_fails_is_told_on_redelivery_and_the_other_is_told_at_once(bitbucket, jira):
    other_site, other_cloud = jira.app.add_site("beta")
    jira.app.add_issues(other_cloud, "ABC-123")
    jira.add_entry()
    jira.add_entry(jira=other_site)
    jira.app.answer_next(503, 503, 503, 503, 503, to="builds")  # the first entry's call, and its retries
    with pytest.raises(relay.errors.TransientError):
        deliver(build("SUCCESS", "b-1", branch=BRANCH))
    assert [b["state"] for b in jira.app.builds_for(other_cloud, "ABC-123")] == ["successful"]
    told = len(jira.app.build_calls())
    deliver(build("SUCCESS", "b-1", branch=BRANCH))
    assert [b["state"] for b in jira.builds("ABC-123")] == ["successful"]
    assert len(jira.app.build_calls()) == told + 1  # the other entry is not told again


def test_a_jira_site_that_cannot_be_reached_does_not_keep_the_next_entry_waiting(bitbucket, jira):
    jira.add_entry(jira="http://127.0.0.1:9/other")  # nothing listens: another team's site, down
    jira.add_entry()
    with pytest.raises(relay.errors.TransientError):
        deliver(build("SUCCESS", "b-1", branch=BRANCH))
    assert [b["state"] for b in jira.builds("ABC-123")] == ["successful"]


# --- tokens ---------------------------------------------------------------------------------------------------------


def test_a_rotated_jira_secret_reaches_a_warm_instance(file_credentials, jira):
    file_credentials([{"token": TOKEN}, jira.entry()])
    deliver(build("WORKING", "b-1", branch=BRANCH))
    rotated = "ATOA-rotated-" + secrets.token_urlsafe(24)
    remember_secret(rotated)
    jira.app.accept_client(jira.client_id, rotated)  # the old secret is refused from now on
    jira.app.expire_tokens()
    file_credentials([{"token": TOKEN}, {**jira.entry(), "client_secret": rotated}])
    deliver(build("SUCCESS", "b-1", branch=BRANCH))
    assert [b["state"] for b in jira.builds("ABC-123")] == ["successful"]


def test_a_cold_instances_concurrent_events_ask_one_token_and_one_cloud_id(bitbucket, jira):
    jira.add_entry()
    jira.app.fault_delay = 0.5
    jira.app.answer_next("timeout", to="token")  # the first token is answered late: every event needs it meanwhile
    builds = [build("WORKING", f"b-{n}", branch=BRANCH, commit=f"{n:040x}", createTime=f"2026-11-27T09:0{n}:00Z")
              for n in range(1, 9)]  # fmt: skip
    with ThreadPoolExecutor(len(builds)) as pool:
        list(pool.map(deliver, builds))
    assert (jira.app.token_requests, jira.app.tenant_info_requests) == (1, 1)
    assert len(jira.builds("ABC-123")) == len(builds)


@pytest.mark.parametrize("expires_in", [10**400, True, -5, 0, "3600", float("inf"), float("nan")])
def test_whatever_a_tokens_expires_in_says_the_token_serves_the_next_build(bitbucket, jira, expires_in):
    jira.add_entry()
    jira.app.expires_in = expires_in  # the token lasts an hour all the same
    lifecycle("b-1", ("WORKING",))
    lifecycle("b-2", ("WORKING",), commit="2" * 40, createTime="2026-11-27T09:30:00Z")
    assert jira.app.token_requests == 1
    assert len(jira.builds("ABC-123")) == 2


@pytest.mark.parametrize(
    "answer",
    [
        {"rejectedBuilds": [{"key": {}, "errors": 5}]},
        {"rejectedBuilds": [{"key": {}, "errors": [{"message": "x"}]}], "unknownIssueKeys": 7},
        {"acceptedBuilds": [], "rejectedBuilds": 3},
        {"unknownIssueKeys": True},
        {"unknownIssueKeys": ["K" * 1_000_000] * 10},
        [1, 2],
    ],
)
def test_a_malformed_answer_of_jira_is_said_in_a_bounded_line(bitbucket, jira, capsys, answer):
    jira.add_entry()
    jira.app.answer_next(Raw(202, json.dumps(answer).encode()), to="builds")
    deliver(build("SUCCESS", "b-1", branch=BRANCH))
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] in ("INFO", "WARNING")
    assert len(line["message"]) < 2000
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


@pytest.mark.parametrize("to", ["token", "builds"])
def test_a_redirect_is_not_followed_and_takes_no_secret_anywhere(bitbucket, jira, capsys, to):
    jira.add_entry()
    elsewhere = f"{jira.server.root}/steal"
    jira.app.answer_next(Raw(307, headers=(("Location", elsewhere),)), to=to)
    deliver(build("SUCCESS", "b-1", branch=BRANCH))  # an ERROR: the operator's to correct
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "ERROR"
    assert "redirect, not followed: check JIRA_API_URL" in line["message"]
    assert [c.path for c in jira.app.calls if c.path.endswith("/steal")] == []
