"""The Bitbucket stand-in refuses what Bitbucket refuses, so the other tests mean something."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from standins.bitbucket import Bitbucket, Server, openapi
from standins.builds import COMMIT

GOOD_TOKEN = "good-token-Z-mrYMtjjBcMQ79skXXPgIWZ"
API_TOKEN = "ATATT3xMwEiboi6X72XV14YdpEDcH-N"  # dev@acme.example's (Basic)
CLIENT_SECRET = "client-secret-VeAJ0bflRwxk69ukyt7PlSIT"
REPOSITORY_TOKEN = "repo-token-webapp-YWNJsm8v_srX66mazczfOdjW"
REPORT_TOKEN = "standin-report-token-EXnjCKOEWgB7ycSr9_cD7e_S"
ANNOTATION_TOKEN = "standin-annotation-token-U8WHC-dhDvZjwWuUVl_7gsLd"
DEPLOYMENT_TOKEN = "standin-deployment-token-xyy5lqsvIUYGE-aufKVPneXK"
BEARER = {"Authorization": f"Bearer {GOOD_TOKEN}"}


@pytest.fixture
def standin() -> Iterator[Server]:
    app = Bitbucket(repositories={"acme/webapp"})
    app.accept_token(GOOD_TOKEN)
    app.accept_basic("dev@acme.example", API_TOKEN)
    server = app.serve()
    yield server
    server.stop()


def statuses(server: Server, repo: str = "acme/webapp", commit: str = COMMIT) -> str:
    return f"{server.api_url}/repositories/{repo}/commit/{commit}/statuses/build"


def post(server: Server, body: dict, headers: dict | None = None, **kwargs) -> requests.Response:
    return requests.post(statuses(server, **kwargs), json=body, headers=headers or BEARER, timeout=5)


def test_a_valid_status_is_created_read_and_listed(standin):
    body = {"key": "k1", "state": "SUCCESSFUL", "url": "https://example.com/b/1", "refname": "main"}
    assert post(standin, body).status_code == 201
    read = requests.get(f"{statuses(standin)}/k1", headers=BEARER, timeout=5).json()
    assert (read["state"], read["refname"], read["type"]) == ("SUCCESSFUL", "main", "build")
    listed = requests.get(statuses(standin).removesuffix("/build"), headers=BEARER, timeout=5).json()
    assert [s["key"] for s in listed["values"]] == ["k1"]


@pytest.mark.parametrize(
    "body",
    [
        {"state": "SUCCESSFUL"},  # no key
        {"key": "k"},  # no state
        {"key": "k", "state": "PASSED"},  # not a Bitbucket state
        {"key": 7, "state": "FAILED"},  # wrong type
        {"key": "k", "state": "FAILED", "url": ["https://x"]},
    ],
)
def test_a_body_that_breaks_the_openapi_schema_is_refused(standin, body):
    response = post(standin, body)
    assert response.status_code == 400
    assert response.json()["type"] == "error"


def test_a_key_over_40_characters_gets_bitbuckets_own_error(standin):
    response = post(standin, {"key": "k" * 41, "state": "FAILED"})
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "message": "key: Ensure this value has at most 40 characters",
            "fields": {"key": ["Ensure this value has at most 40 characters"]},
        },
    }


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic ZGV2QGFjbWUuZXhhbXBsZTp3cm9uZw=="}],
)
def test_missing_or_wrong_credentials_get_401(standin, headers):
    response = requests.post(statuses(standin), json={"key": "k", "state": "FAILED"}, headers=headers, timeout=5)
    assert response.status_code == 401


def test_basic_with_the_right_api_token_is_accepted(standin):
    response = requests.post(
        statuses(standin), json={"key": "k", "state": "FAILED"}, auth=("dev@acme.example", API_TOKEN), timeout=5
    )
    assert response.status_code == 201


def test_only_the_creator_of_a_status_may_overwrite_it(standin):
    assert post(standin, {"key": "k", "state": "INPROGRESS"}).status_code == 201
    response = requests.post(
        statuses(standin), json={"key": "k", "state": "FAILED"}, auth=("dev@acme.example", API_TOKEN), timeout=5
    )
    assert response.status_code == 403
    assert post(standin, {"key": "k", "state": "FAILED"}).status_code == 200


def test_the_same_key_with_another_refname_overwrites_the_status_refname_included(standin):
    """Atlassian's description of the POST: "If the specified key already exists, the existing status object
    will be overwritten"; the branch is an attribute of the status, not part of its identity."""
    post(standin, {"key": "k", "state": "FAILED", "refname": "main"})
    post(standin, {"key": "k", "state": "SUCCESSFUL", "refname": "feature/x"})
    assert [(s["refname"], s["state"]) for s in standin.app.shown("acme", "webapp", COMMIT)] == [
        ("feature/x", "SUCCESSFUL")
    ]


def test_unknown_repositories_and_short_commits_are_404(standin):
    assert post(standin, {"key": "k", "state": "FAILED"}, repo="acme/other").status_code == 404
    assert post(standin, {"key": "k", "state": "FAILED"}, commit="65ca6a9").status_code == 404


def test_put_updates_an_existing_status_and_refuses_a_missing_one(standin):
    url = f"{statuses(standin)}/k"
    assert requests.put(url, json={"key": "k", "state": "FAILED"}, headers=BEARER, timeout=5).status_code == 404
    post(standin, {"key": "k", "state": "INPROGRESS"})
    assert requests.put(url, json={"key": "k", "state": "FAILED"}, headers=BEARER, timeout=5).status_code == 200
    assert standin.app.shown("acme", "webapp", COMMIT)[0]["state"] == "FAILED"


def test_oauth_client_credentials_give_a_bearer_token(standin):
    standin.app.accept_consumer("client-id", CLIENT_SECRET)
    token = requests.post(
        standin.token_url, data={"grant_type": "client_credentials"}, auth=("client-id", CLIENT_SECRET), timeout=5
    ).json()
    assert token["expires_in"] == 7200
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert post(standin, {"key": "k", "state": "FAILED"}, headers=headers).status_code == 201
    refused = requests.post(
        standin.token_url, data={"grant_type": "client_credentials"}, auth=("client-id", "wrong"), timeout=5
    )
    assert refused.status_code == 400


def test_each_credential_has_its_own_budget_and_access_tokens_see_it_in_headers(standin):
    standin.app.budget = 5
    answers = [post(standin, {"key": "k", "state": "FAILED"}) for _ in range(6)]
    assert [a.status_code for a in answers] == [201, 200, 200, 200, 200, 429]
    assert [a.headers["X-RateLimit-NearLimit"] for a in answers[:5]] == ["false"] * 3 + ["true"] * 2
    assert answers[0].headers["X-RateLimit-Limit"] == "5"
    basic = requests.post(
        statuses(standin), json={"key": "b", "state": "FAILED"}, auth=("dev@acme.example", API_TOKEN), timeout=5
    )
    assert basic.status_code == 201  # another credential, another budget
    assert "X-RateLimit-Limit" not in basic.headers  # API tokens get no rate-limit headers


def test_a_repository_access_token_reaches_only_its_repository(standin):
    standin.app.repositories.add("acme/other")
    standin.app.accept_token(REPOSITORY_TOKEN, {"acme/webapp"})
    headers = {"Authorization": f"Bearer {REPOSITORY_TOKEN}"}
    assert post(standin, {"key": "k", "state": "FAILED"}, headers=headers).status_code == 201
    assert post(standin, {"key": "k", "state": "FAILED"}, headers=headers, repo="acme/other").status_code == 403


def test_injected_faults_come_at_the_configured_rate(standin):
    standin.app.fault_rate = 0.5
    standin.app.faults = ("500", "502", "503", "429")
    codes = [post(standin, {"key": "k", "state": "FAILED"}).status_code for _ in range(200)]
    failed = sum(code >= 429 for code in codes)
    assert 70 <= failed <= 130
    assert {500, 502, 503, 429} <= set(codes)


def test_a_dropped_connection_gives_no_answer(standin):
    standin.app.fail_next("drop")
    with pytest.raises(requests.ConnectionError):
        post(standin, {"key": "k", "state": "FAILED"})


def test_went_backwards_names_a_build_that_went_from_final_back_to_in_progress(standin):
    build_1, build_2 = "https://example.com/builds/1", "https://example.com/builds/2"
    post(standin, {"key": "k", "state": "INPROGRESS", "url": build_1})
    post(standin, {"key": "k", "state": "FAILED", "url": build_1})
    post(standin, {"key": "k", "state": "INPROGRESS", "url": build_2})  # a re-run: not backwards
    assert standin.app.went_backwards() == []
    post(standin, {"key": "k", "state": "INPROGRESS", "url": build_1})
    assert [s["url"] for s in standin.app.went_backwards()] == [build_1]


def test_reports_are_accepted_only_as_atlassians_descriptions_allow():
    from werkzeug.test import Client

    from standins.datacenter import DataCenter

    headers = {"Authorization": f"Bearer {REPORT_TOKEN}"}
    cloud, server = Bitbucket(), DataCenter()
    cloud.accept_token(REPORT_TOKEN)
    server.accept_token(REPORT_TOKEN)
    on_cloud = f"/2.0/repositories/acme/webapp/commit/{'a' * 40}/reports/cloud-build-x"
    on_server = f"/bitbucket/rest/insights/latest/projects/PROJ/repos/repo/commits/{'a' * 40}/reports/cloud-build-x"
    good = {"title": "t", "details": "d", "report_type": "TEST", "result": "PASSED",
            "data": [{"title": "Duration", "type": "DURATION", "value": 5}]}  # fmt: skip
    assert Client(cloud).put(on_cloud, json=good, headers=headers).status_code == 200
    for bad in ({**good, "result": "PASS"}, {**good, "report_type": "BUILD"}, {**good, "data": good["data"] * 11}):
        assert Client(cloud).put(on_cloud, json=bad, headers=headers).status_code == 400
    good = {
        "title": "t",
        "result": "PASS",
        "data": [{"title": "Log", "type": "LINK", "value": {"linktext": "l", "href": "h"}}],
    }
    assert Client(server).put(on_server, json=good, headers=headers).status_code == 200
    for bad in ({**good, "result": "PASSED"}, {**good, "title": "t" * 451}, {**good, "data": good["data"] * 7},
                {**good, "details": "d" * 2001}):  # fmt: skip
        assert Client(server).put(on_server, json=bad, headers=headers).status_code == 400


def test_annotations_are_accepted_only_as_atlassians_descriptions_allow_and_outlive_a_replaced_report():
    from werkzeug.test import Client

    from standins.datacenter import DataCenter

    headers = {"Authorization": f"Bearer {ANNOTATION_TOKEN}"}
    cloud, server = Bitbucket(), DataCenter()
    cloud.accept_token(ANNOTATION_TOKEN)
    server.accept_token(ANNOTATION_TOKEN)
    on_cloud = f"/2.0/repositories/acme/webapp/commit/{'a' * 40}/reports/cloud-build-x"
    report = {"title": "t", "details": "d", "report_type": "TEST", "result": "FAILED", "data": []}
    assert Client(cloud).put(on_cloud, json=report, headers=headers).status_code == 200
    good = {"external_id": "a1", "annotation_type": "BUG", "summary": "s", "path": "x.py", "line": 3,
            "severity": "HIGH", "result": "FAILED"}  # fmt: skip
    assert Client(cloud).post(f"{on_cloud}/annotations", json=[good], headers=headers).status_code == 200
    for bad in ([good] * 101, [{**good, "line": 0}], [{**good, "severity": "ERROR"}], [{**good, "summary": "s" * 451}],
                [{**good, "annotation_type": "ERROR"}], []):  # fmt: skip
        assert Client(cloud).post(f"{on_cloud}/annotations", json=bad, headers=headers).status_code == 400
    assert Client(cloud).put(on_cloud, json=report, headers=headers).status_code == 200  # replaced: annotations stay
    assert len(cloud.shown_annotations("acme", "webapp", "a" * 40)) == 1
    assert Client(cloud).delete(on_cloud, headers=headers).status_code == 204  # deleted: with them
    assert cloud.shown_annotations("acme", "webapp", "a" * 40) == []

    on_server = f"/bitbucket/rest/insights/latest/projects/PROJ/repos/repo/commits/{'a' * 40}/reports/cloud-build-x"
    report = {"title": "t", "result": "FAIL", "data": []}
    assert Client(server).put(on_server, json=report, headers=headers).status_code == 200
    good = {"externalId": "a1", "message": "m", "severity": "HIGH", "path": "x.py", "line": 3, "type": "BUG"}
    for _ in range(2):  # no de-duplication on a server
        assert Client(server).post(f"{on_server}/annotations", json={"annotations": [good]},
                                   headers=headers).status_code == 204  # fmt: skip
    for bad in ({**good, "severity": "CRITICAL"}, {**good, "message": "m" * 2001}, {**good, "line": -1},
                {**good, "type": "ERROR"}):  # fmt: skip
        assert Client(server).post(f"{on_server}/annotations", json={"annotations": [bad]},
                                   headers=headers).status_code == 400  # fmt: skip
    assert Client(server).put(on_server, json=report, headers=headers).status_code == 200
    assert len(server.shown_annotations("PROJ", "repo", "a" * 40)) == 2
    assert Client(server).delete(on_server, headers=headers).status_code == 204
    assert server.shown_annotations("PROJ", "repo", "a" * 40) == []


def test_a_commits_message_is_read_by_a_credential_that_reaches_its_repository(standin):
    standin.app.commit_messages[("acme/webapp", COMMIT)] = "ABC-124: sign in with SSO"
    url = f"{standin.api_url}/repositories/acme/webapp/commit/{COMMIT}"
    answer = requests.get(url, headers=BEARER, timeout=5)
    assert answer.status_code == 200
    result = openapi().unmarshal_response(RequestsOpenAPIRequest(answer.request), RequestsOpenAPIResponse(answer))
    assert result.errors == []  # the answer is a commit as Atlassian's description gives one
    assert (answer.json()["hash"], answer.json()["message"]) == (COMMIT, "ABC-124: sign in with SSO")
    assert requests.get(url.replace(COMMIT, "b" * 40), headers=BEARER, timeout=5).status_code == 404  # none set
    assert requests.get(url, timeout=5).status_code == 401
    standin.app.repositories.add("acme/other")
    standin.app.accept_token(REPOSITORY_TOKEN, {"acme/other"})
    assert requests.get(url, headers={"Authorization": f"Bearer {REPOSITORY_TOKEN}"}, timeout=5).status_code == 403
    assert len(standin.app.commit_calls()) == 4


def valid_on_server(answer: Any, body: Any = None) -> Any:
    """A Data Center stand-in's answer, once Atlassian's description accepts it as its operation's answer."""
    from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    from standins import datacenter

    assert answer.status_code == 200
    asked = Request(EnvironBuilder(method=answer.request.method, path=answer.request.path, json=body).get_environ())
    result = datacenter.openapi().unmarshal_response(WerkzeugOpenAPIRequest(asked), WerkzeugOpenAPIResponse(answer))
    assert result.errors == []
    return answer.json


def test_a_data_center_commit_and_its_deployments_are_served_as_atlassians_description_allows():
    from werkzeug.test import Client

    from standins.datacenter import DataCenter

    headers = {"Authorization": f"Bearer {DEPLOYMENT_TOKEN}"}
    server = DataCenter()
    server.accept_token(DEPLOYMENT_TOKEN)
    commit = f"/bitbucket/rest/api/latest/projects/PROJ/repos/repo/commits/{COMMIT}"
    server.commit_messages[("PROJ/repo", COMMIT)] = "ABC-123 fix the login"
    assert valid_on_server(Client(server).get(commit, headers=headers))["message"] == "ABC-123 fix the login"
    assert Client(server).get(commit.replace(COMMIT, "b" * 40), headers=headers).status_code == 404
    assert Client(server).get(commit).status_code == 401
    good = {"key": "acme-webapp-deploy", "deploymentSequenceNumber": 1, "state": "IN_PROGRESS",
            "environment": {"key": "production", "displayName": "production", "type": "PRODUCTION"},
            "url": "https://console.cloud.google.com/cloud-build/builds/b-1", "displayName": "webapp",
            "description": "Deploying"}  # fmt: skip
    assert (
        valid_on_server(Client(server).post(f"{commit}/deployments", json=good, headers=headers), good)["key"]
        == good["key"]
    )
    done = {**good, "state": "SUCCESSFUL"}  # the same deployment: replaced
    assert Client(server).post(f"{commit}/deployments", json=done, headers=headers).json["state"] == "SUCCESSFUL"
    assert Client(server).post(f"{commit}/deployments", json={**good, "deploymentSequenceNumber": 2},
                               headers=headers).status_code == 200  # fmt: skip
    assert [(d["deploymentSequenceNumber"], d["state"]) for d in server.deployments_for("PROJ", "repo", COMMIT)] == [
        (1, "SUCCESSFUL"), (2, "IN_PROGRESS")]  # fmt: skip
    assert server.deployments_for("PROJ", "repo", "b" * 40) == []
    one = f"{commit}/deployments?key=acme-webapp-deploy&environmentKey=production&deploymentSequenceNumber=1"
    assert Client(server).get(one, headers=headers).json["state"] == "SUCCESSFUL"
    assert Client(server).get(one.replace("production", "staging"), headers=headers).status_code == 404
    environment = good["environment"]
    for bad in ({**good, "state": "successful"}, {**good, "state": "DONE"}, {**good, "url": "u" * 1025},
                {**good, "environment": {**environment, "type": "production"}},  # the server's types are upper case
                {**good, "environment": {**environment, "type": "PRODUCTION-EU"}},  # the pattern is unanchored
                {**good, "environment": {"displayName": "production"}},  # no key
                {k: v for k, v in good.items() if k != "deploymentSequenceNumber"}):  # fmt: skip
        assert Client(server).post(f"{commit}/deployments", json=bad, headers=headers).status_code == 400
    assert len(server.deployments_for("PROJ", "repo", COMMIT)) == 2
    assert len(server.deployment_calls()) == 12
    assert len(server.commit_calls()) == 3
