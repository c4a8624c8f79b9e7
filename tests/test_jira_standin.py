"""The Jira stand-in refuses what Jira refuses and keeps what Jira keeps, so the tests of the relay's Jira side mean
something: Atlassian's token endpoint, a site's cloud id, the builds and deployments bulk APIs (their bodies against
Atlassian's OpenAPI description, updateSequenceNumber, unknown issue keys, the permissions), its scripted faults."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import requests
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from standins import SEEN_SECRETS
from standins.jira import ANSWERS, openapi
from standins.processes import wait_until
from tests.conftest import JIRA_CLIENT_ID, JIRA_CLIENT_SECRET, TOKEN, JiraSite

OTHER_SECRET = "ATOA-i57Io5RC5Mie21bRAeanl30FDTWDtDBR"  # another site's OAuth credentials
COMMIT = "4d2a3c1f0e9b8a7d6c5b4a3f2e1d0c9b8a7f6e5d"
COMMIT_ASSOCIATION = {"associationType": "commit", "values": [{"commitHash": COMMIT, "repositoryId": "acme/webapp"}]}


def token_request(jira: JiraSite, **fields: Any) -> requests.Response:
    body = {"audience": "api.atlassian.com", "grant_type": "client_credentials", "client_id": JIRA_CLIENT_ID,
            "client_secret": JIRA_CLIENT_SECRET, **fields}  # fmt: skip
    return requests.post(f"{jira.server.root}/oauth/token", json=body, timeout=5)


def bearer(jira: JiraSite, **fields: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_request(jira, **fields).json()['access_token']}"}


def bulk(jira: JiraSite, kind: str, body: Any, headers: dict[str, str] | None = None, cloud_id: str | None = None,
         timeout: float = 5) -> requests.Response:  # fmt: skip
    url = f"{jira.server.root}/jira/{kind}/0.1/cloud/{cloud_id or jira.cloud_id}/bulk"
    return requests.post(url, json=body, headers=headers or bearer(jira), timeout=timeout)


def a_build(**fields: Any) -> dict[str, Any]:
    """A build as the description allows one, every optional field given."""
    return {
        "schemaVersion": "1.0",
        "pipelineId": "acme-webapp-main-trigger",
        "buildNumber": 1767600000,
        "updateSequenceNumber": 1767600000001,
        "displayName": "webapp (main)",
        "url": "https://console.cloud.google.com/cloud-build/builds/b-0001?project=acme",
        "state": "in_progress",
        "lastUpdated": "2026-01-05T08:00:00Z",
        "description": "Build running",
        "label": "b-0001",
        "issueKeys": ["ABC-123"],
        "references": [{"commit": {"id": COMMIT, "repositoryUri": "https://bitbucket.org/acme/webapp"},
                        "ref": {"name": "feature/ABC-123-login",
                                "uri": "https://bitbucket.org/acme/webapp/branch/feature/ABC-123-login"}}],
        "testInfo": {"totalNumber": 10, "numberPassed": 8, "numberFailed": 1, "numberSkipped": 1},
        **fields,
    }  # fmt: skip


def a_deployment(**fields: Any) -> dict[str, Any]:
    return {
        "schemaVersion": "1.0",
        "deploymentSequenceNumber": 1767600000,
        "updateSequenceNumber": 1767600000001,
        "displayName": "webapp to production",
        "url": "https://console.cloud.google.com/cloud-build/builds/b-0001?project=acme",
        "description": "Deploying",
        "lastUpdated": "2026-01-05T08:00:00Z",
        "state": "in_progress",
        "pipeline": {"id": "acme-webapp-deploy", "displayName": "webapp deploy",
                     "url": "https://console.cloud.google.com/cloud-build/triggers?project=acme"},
        "environment": {"id": "production", "displayName": "production", "type": "production"},
        "associations": [{"associationType": "issueKeys", "values": ["ABC-123"]}],
        **fields,
    }  # fmt: skip


def valid_answer(response: requests.Response) -> Any:
    """The answer's body, once Atlassian's description accepts it as this operation's answer."""
    result = openapi().unmarshal_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))
    assert result.errors == []
    return response.json()


# --- the token and the site ---------------------------------------------------------------------------


def test_the_client_a_jira_admin_created_gets_a_bearer_token_for_an_hour_and_no_other_does(jira):
    answer = token_request(jira)
    assert answer.status_code == 200
    token = answer.json()
    assert (token["token_type"], token["expires_in"]) == ("Bearer", 3600)
    assert token["access_token"] in SEEN_SECRETS  # the guard fails a run that prints it
    form = {"grant_type": "client_credentials", "audience": "api.atlassian.com", "client_id": JIRA_CLIENT_ID,
            "client_secret": JIRA_CLIENT_SECRET}  # fmt: skip
    assert requests.post(f"{jira.server.root}/oauth/token", data=form, timeout=5).status_code == 200
    for wrong in ({"client_secret": OTHER_SECRET}, {"client_id": "someone-else"}, {"client_secret": None}):
        refused = token_request(jira, **wrong)
        assert (refused.status_code, refused.json()["error"]) == (401, "access_denied")
    assert token_request(jira, audience="auth.atlassian.com").status_code == 403
    assert token_request(jira, audience=None).status_code == 403
    assert token_request(jira, grant_type="password").status_code == 400
    assert jira.app.token_requests == 8


def test_the_client_secret_is_not_kept_in_the_recorded_calls(jira):
    token_request(jira)
    [call] = jira.app.calls
    assert call.body is not None
    assert JIRA_CLIENT_SECRET not in str(call.body)
    assert call.body["client_id"] == JIRA_CLIENT_ID


def test_a_sites_tenant_info_gives_its_cloud_id_without_credentials(jira):
    assert requests.get(f"{jira.url}/_edge/tenant_info", timeout=5).json() == {"cloudId": jira.cloud_id}
    other_url, other_id = jira.app.add_site("globex")
    assert requests.get(f"{other_url}/_edge/tenant_info", timeout=5).json() == {"cloudId": other_id}
    assert other_id != jira.cloud_id
    assert requests.get(f"{jira.server.root}/initech/_edge/tenant_info", timeout=5).status_code == 404
    assert jira.app.tenant_info_requests == 3


# --- who may send -------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic Y2k6eA=="}])
def test_a_bulk_call_without_a_token_issued_to_a_client_gets_401(jira, headers):
    assert bulk(jira, "builds", {"builds": [a_build()]}, headers=headers or {"X": "none"}).status_code == 401
    assert jira.builds("ABC-123") == []


def test_an_expired_token_gets_401_and_a_fresh_one_is_served(jira):
    stale = bearer(jira)
    jira.app.expire_tokens()
    assert bulk(jira, "builds", {"builds": [a_build()]}, headers=stale).status_code == 401
    assert bulk(jira, "builds", {"builds": [a_build()]}, headers=bearer(jira)).status_code == 202


def test_credentials_without_the_permission_or_of_another_site_get_403(jira):
    jira.app.accept_client(JIRA_CLIENT_ID, JIRA_CLIENT_SECRET, permissions=("builds",))
    assert bulk(jira, "builds", {"builds": [a_build()]}).status_code == 202
    assert bulk(jira, "deployments", {"deployments": [a_deployment()]}).status_code == 403
    _, other_site = jira.app.add_site("globex")
    jira.app.add_issues(other_site, "ABC-123")
    jira.app.accept_client("globex-client", OTHER_SECRET, sites=(other_site,))
    globex = bearer(jira, client_id="globex-client", client_secret=OTHER_SECRET)
    assert bulk(jira, "builds", {"builds": [a_build()]}, headers=globex).status_code == 403
    assert bulk(jira, "builds", {"builds": [a_build()]}, headers=globex, cloud_id=other_site).status_code == 202
    assert bulk(jira, "builds", {"builds": [a_build()]}, cloud_id="no-such-site").status_code == 403
    assert jira.deployments("ABC-123") == []


# --- bodies, against Atlassian's description ----------------------------------------------------------


def test_a_build_and_a_deployment_as_the_description_allows_them_are_kept_and_answered_as_it_says(jira):
    answer = valid_answer(bulk(jira, "builds", {"builds": [a_build()], "providerMetadata": {"product": "Cloud Build"}}))
    assert answer == {"acceptedBuilds": [{"pipelineId": "acme-webapp-main-trigger", "buildNumber": 1767600000}],
                      "rejectedBuilds": [], "unknownIssueKeys": []}  # fmt: skip
    answer = valid_answer(bulk(jira, "deployments", {"deployments": [a_deployment()]}))
    key = {"pipelineId": "acme-webapp-deploy", "environmentId": "production", "deploymentSequenceNumber": 1767600000}
    assert answer["acceptedDeployments"] == [key]
    assert jira.builds("ABC-123") == [a_build()]
    assert jira.deployments("ABC-123") == [a_deployment()]
    assert jira.app.invalid == []


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("builds", {"builds": []}),
        ("builds", {}),
        ("builds", {"builds": a_build()}),  # one build, not a list
        ("builds", {"builds": [a_build()], "properties": {f"p{n}": "v" for n in range(6)}}),  # at most 5
        ("builds", {"builds": [a_build(buildNumber="7")]}),  # a build that cannot be told apart
        ("builds", {"builds": [{k: v for k, v in a_build().items() if k != "pipelineId"}]}),
        (
            "deployments",
            {"deployments": [a_deployment(environment={"displayName": "production", "type": "production"})]},
        ),
        ("deployments", {"builds": [a_build()]}),
    ],
)
def test_a_request_the_description_refuses_as_a_whole_is_answered_400_and_recorded(jira, kind, body):
    response = bulk(jira, kind, body)
    assert response.status_code == 400
    assert all(error["message"] for error in valid_answer(response))
    assert [path for path, _ in jira.app.invalid] == [f"/jira/{kind}/0.1/cloud/{jira.cloud_id}/bulk"]
    assert jira.builds("ABC-123") == jira.deployments("ABC-123") == []


@pytest.mark.parametrize(
    ("kind", "refused", "reason"),
    [
        ("builds", a_build(state="passed"), "state"),
        ("builds", a_build(issueKeys=["ABC 123"]), "issueKeys.0"),
        ("builds", a_build(issueKeys=[]), "issueKeys"),
        ("builds", a_build(issueKeys=[f"ABC-{n}" for n in range(101)]), "issueKeys"),  # Jira's 100
        ("builds", a_build(displayName="d" * 256), "displayName"),
        ("builds", a_build(lastUpdated="yesterday"), "lastUpdated"),
        ("builds", a_build(url="console.cloud.google.com/cloud-build/builds/b-0001"), "url"),  # not absolute
        ("builds", a_build(references=[a_build()["references"][0]] * 6), "references"),  # at most 5
        ("builds", a_build(testInfo={"totalNumber": 3}), "testInfo"),
        ("builds", {k: v for k, v in a_build().items() if k != "updateSequenceNumber"}, "updateSequenceNumber"),
        ("builds", a_build(schemaVersion="2.0"), "schemaVersion"),
        ("deployments", a_deployment(state="done"), "state"),
        ("deployments", a_deployment(environment={"id": "prod", "displayName": "prod", "type": "prod"}), "type"),
        ("deployments", a_deployment(description=None), "description"),
        ("deployments", a_deployment(pipeline={"id": "p", "displayName": "p", "url": "/triggers"}), "pipeline.url"),
        # the description's oneOf leaves a commit association out, though its anyOf names it
        ("deployments", a_deployment(associations=[COMMIT_ASSOCIATION]), "associations"),
    ],
)
def test_an_entity_the_description_refuses_is_rejected_in_a_202_beside_the_valid_one(jira, kind, refused, reason):
    """Atlassian's description: "in the case of an individual build having an invalid format (rather than the
    request as a whole) the response for the request will be a 202 and details of the invalid build will be
    contained in the response object"."""
    number = "buildNumber" if kind == "builds" else "deploymentSequenceNumber"
    good = a_build() if kind == "builds" else a_deployment()
    refused = {**refused, number: good[number] + 1}
    answer = valid_answer(bulk(jira, kind, {kind: [good, refused]}))
    accepted, rejected = ANSWERS[kind]
    assert len(answer[accepted]) == 1
    [rejection] = answer[rejected]
    assert rejection["key"][number] == good[number] + 1
    assert any(reason in error["message"] for error in rejection["errors"])
    show = jira.builds if kind == "builds" else jira.deployments
    assert [entity[number] for entity in show("ABC-123")] == [good[number]]
    [(_, why)] = jira.app.invalid
    assert why.startswith(f"{kind}[1]: ")


# --- Jira's rules -------------------------------------------------------------------------------------


def test_only_a_greater_update_sequence_number_replaces_a_build_and_an_equal_or_lower_one_is_accepted_unchanged(jira):
    assert bulk(jira, "builds", {"builds": [a_build(updateSequenceNumber=5, state="in_progress")]}).status_code == 202
    for late in (a_build(updateSequenceNumber=4, state="successful"), a_build(updateSequenceNumber=5, state="failed")):
        answer = bulk(jira, "builds", {"builds": [late]}).json()
        assert (len(answer["acceptedBuilds"]), answer["rejectedBuilds"]) == (1, [])  # accepted, not a failure
        assert [b["state"] for b in jira.builds("ABC-123")] == ["in_progress"]
    bulk(jira, "builds", {"builds": [a_build(updateSequenceNumber=6, state="successful", issueKeys=["ABC-124"])]})
    assert [b["state"] for b in jira.builds("ABC-124")] == ["successful"]
    assert jira.builds("ABC-123") == []  # the replaced data named another issue


def test_builds_are_one_per_pipeline_and_build_number_on_each_site(jira):
    bulk(jira, "builds", {"builds": [a_build(buildNumber=1), a_build(buildNumber=2), a_build(pipelineId="other")]})
    bulk(jira, "builds", {"builds": [a_build(buildNumber=2, updateSequenceNumber=2**62)]})
    shown = [(b["pipelineId"], b["buildNumber"]) for b in jira.builds("ABC-123")]
    assert shown == [("acme-webapp-main-trigger", 1), ("acme-webapp-main-trigger", 2), ("other", 1767600000)]
    _, other_site = jira.app.add_site("globex")
    jira.app.add_issues(other_site, "ABC-123")
    assert bulk(jira, "builds", {"builds": [a_build(buildNumber=1)]}, cloud_id=other_site).status_code == 202
    assert len(jira.app.builds_for(other_site, "ABC-123")) == 1
    assert len(jira.builds("ABC-123")) == 3


def test_unknown_issue_keys_are_listed_and_the_build_shows_on_the_known_ones_only(jira):
    answer = valid_answer(bulk(jira, "builds", {"builds": [a_build(issueKeys=["ABC-123", "UTF-8", "ABC-124"])]}))
    assert (len(answer["acceptedBuilds"]), answer["unknownIssueKeys"]) == (1, ["UTF-8"])
    assert len(jira.builds("ABC-123")) == len(jira.builds("ABC-124")) == 1
    assert jira.builds("UTF-8") == []
    assert jira.builds("abc-123") == []  # Jira's keys are upper case


def test_a_build_naming_only_unknown_issues_is_rejected_and_not_kept(jira):
    answer = valid_answer(bulk(jira, "builds", {"builds": [a_build(issueKeys=["UTF-8", "SHA-256"])]}))
    assert (answer["acceptedBuilds"], answer["unknownIssueKeys"]) == ([], ["UTF-8", "SHA-256"])
    [rejection] = answer["rejectedBuilds"]
    assert rejection["key"] == {"pipelineId": "acme-webapp-main-trigger", "buildNumber": 1767600000}
    assert jira.app.builds == {}
    assert jira.app.invalid == []  # a valid body: Jira's rule, not the description's


def test_a_later_update_naming_only_unknown_issues_leaves_the_kept_build_as_it_was(jira):
    bulk(jira, "builds", {"builds": [a_build(updateSequenceNumber=1, state="in_progress")]})
    bulk(jira, "builds", {"builds": [a_build(updateSequenceNumber=2, state="failed", issueKeys=["XYZ-1"])]})
    assert [b["state"] for b in jira.builds("ABC-123")] == ["in_progress"]


def test_deployments_are_one_per_pipeline_environment_and_sequence_number_and_keep_the_greater_update(jira):
    bulk(jira, "deployments", {"deployments": [a_deployment(updateSequenceNumber=2, state="successful")]})
    bulk(jira, "deployments", {"deployments": [a_deployment(updateSequenceNumber=1, state="in_progress")]})
    staging = {"id": "staging", "displayName": "staging", "type": "staging"}
    bulk(jira, "deployments", {"deployments": [a_deployment(environment=staging)]})
    shown = [(d["environment"]["id"], d["state"]) for d in jira.deployments("ABC-123")]
    assert shown == [("production", "successful"), ("staging", "in_progress")]


def test_a_deployments_unknown_issues_are_listed_twice_and_one_naming_only_those_is_rejected(jira):
    named = [{"associationType": "issueKeys", "values": ["ABC-124", "UTF-8"]}]
    answer = valid_answer(bulk(jira, "deployments", {"deployments": [a_deployment(associations=named)]}))
    assert answer["unknownIssueKeys"] == ["UTF-8"]
    assert answer["unknownAssociations"] == [{"associationType": "issueKeys", "values": ["UTF-8"]}]
    assert len(jira.deployments("ABC-124")) == 1
    only_unknown = [{"associationType": "issueKeys", "values": ["UTF-8"]}]
    refused = a_deployment(associations=only_unknown, deploymentSequenceNumber=2)
    answer = valid_answer(bulk(jira, "deployments", {"deployments": [refused]}))
    assert (answer["acceptedDeployments"], len(answer["rejectedDeployments"])) == ([], 1)


def test_a_deployments_deprecated_top_level_issue_keys_still_associate_it(jira):
    deployment = {k: v for k, v in a_deployment(issueKeys=["ABC-124"]).items() if k != "associations"}
    assert valid_answer(bulk(jira, "deployments", {"deployments": [deployment]}))["rejectedDeployments"] == []
    assert len(jira.deployments("ABC-124")) == 1


# --- reads by key: what a self-hosted tool may read, and nothing written --------------------------------


def by_key(jira: JiraSite, kind: str, *key: Any, headers: dict[str, str] | None = None,
           cloud_id: str | None = None) -> requests.Response:  # fmt: skip
    """getBuildByKey (pipeline, number) or getDeploymentByKey (pipeline, environment, number)."""
    parts = ("pipelines", "builds") if kind == "builds" else ("pipelines", "environments", "deployments")
    path = "/".join(f"{part}/{value}" for part, value in zip(parts, key, strict=True))
    url = f"{jira.server.root}/jira/{kind}/0.1/cloud/{cloud_id or jira.cloud_id}/{path}"
    return requests.get(url, headers=headers or bearer(jira), timeout=5)


def test_a_stored_build_or_deployment_is_read_by_its_key_and_one_never_sent_is_404(jira):
    build, deployment = a_build(), a_deployment()
    bulk(jira, "builds", {"builds": [build]})
    bulk(jira, "deployments", {"deployments": [deployment]})
    assert valid_answer(by_key(jira, "builds", build["pipelineId"], build["buildNumber"])) == build
    stored = by_key(jira, "deployments", "acme-webapp-deploy", "production", deployment["deploymentSequenceNumber"])
    assert valid_answer(stored) == deployment
    assert by_key(jira, "builds", build["pipelineId"], build["buildNumber"] + 1).status_code == 404
    assert by_key(jira, "deployments", "acme-webapp-deploy", "staging", 1767600000).status_code == 404
    assert by_key(jira, "builds", build["pipelineId"], "latest").status_code == 400  # an int64, the description says
    assert len(jira.app.build_calls()) == len(jira.app.deployment_calls()) == 1  # a read is no bulk call


def test_reading_by_key_takes_the_same_token_site_and_permission_as_sending_and_writes_nothing(jira):
    assert by_key(jira, "builds", "p", 1, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    jira.app.accept_client(JIRA_CLIENT_ID, JIRA_CLIENT_SECRET, permissions=("builds",))
    assert by_key(jira, "builds", "p", 1).status_code == 404
    assert by_key(jira, "deployments", "p", "production", 1).status_code == 403
    assert by_key(jira, "builds", "p", 1, cloud_id="no-such-site").status_code == 403
    jira.app.answer_next(503, to="builds")
    assert by_key(jira, "builds", "p", 1).status_code == 503  # a scripted answer to the builds API reaches its reads
    assert (jira.app.builds, jira.app.deployments, jira.app.invalid) == ({}, {}, [])


# --- scripted answers ---------------------------------------------------------------------------------


def test_scripted_answers_go_to_the_next_calls_they_target_and_never_to_tenant_info(jira):
    headers = bearer(jira)
    jira.app.answer_next(503, 429, to="builds")
    jira.app.answer_next(401)
    assert requests.get(f"{jira.url}/_edge/tenant_info", timeout=5).status_code == 200
    assert token_request(jira).status_code == 401  # "api": the next call but tenant_info
    first = bulk(jira, "builds", {"builds": [a_build()]}, headers=headers)
    assert (first.status_code, first.json()) == (503, {"code": 503, "message": "Service Unavailable"})
    assert bulk(jira, "deployments", {"deployments": [a_deployment()]}, headers=headers).status_code == 202
    limited = bulk(jira, "builds", {"builds": [a_build()]}, headers=headers)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    assert jira.builds("ABC-123") == []
    assert bulk(jira, "builds", {"builds": [a_build()]}, headers=headers).status_code == 202
    assert [c.status for c in jira.app.build_calls()] == [202]


def test_a_timeout_is_served_and_answered_too_late_and_a_drop_is_not_answered(jira):
    jira.app.fault_delay = 1.0
    headers = bearer(jira)
    jira.app.answer_next("timeout", "drop", to="bulk")
    with pytest.raises(requests.Timeout):
        bulk(jira, "builds", {"builds": [a_build()]}, headers=headers, timeout=0.2)
    wait_until(jira.app.build_calls, 10, "the stand-in to finish serving the call")
    assert len(jira.builds("ABC-123")) == 1  # Jira kept it; the client never heard
    with pytest.raises(requests.ConnectionError):
        bulk(jira, "deployments", {"deployments": [a_deployment()]}, headers=headers)
    assert jira.deployments("ABC-123") == []


def test_scripted_answers_are_statuses_or_faults_to_known_targets(jira):
    with pytest.raises(ValueError, match="answer"):
        jira.app.answer_next(200)
    with pytest.raises(ValueError, match="to="):
        jira.app.answer_next(503, to="tenant_info")


def test_the_fixture_puts_the_sites_entry_after_the_entries_the_document_has(bitbucket, jira):
    entry = jira.add_entry(repositories=["acme/*"], projects=None)
    assert entry == {"jira": jira.url, "client_id": JIRA_CLIENT_ID, "client_secret": JIRA_CLIENT_SECRET,
                     "repositories": ["acme/*"]}  # fmt: skip
    assert json.loads(os.environ["BITBUCKET_CREDENTIALS"]) == [{"token": TOKEN}, entry]
    assert os.environ["JIRA_API_URL"] == jira.server.root
