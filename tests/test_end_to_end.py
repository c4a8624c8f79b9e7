"""End to end, through the components production uses: Cloud Build's messages are
published to the Pub/Sub emulator's `cloud-builds` topic, a push subscription
delivers them to functions-framework serving main.py, which reads its
credentials from the storage emulator and a local KMS and posts to the
Bitbucket stand-in."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from standins.bitbucket import Server, token_identity
from standins.builds import build, connected_repository, now, push_body
from standins.datacenter import DataCenter
from standins.processes import ROOT, FunctionServer, PubSubEmulator, wait_until
from standins.tls import certificate_authority, signed_by
from tests.conftest import KMS_KEY, TOKEN, remember_stored, shown

pytestmark = pytest.mark.emulator
SIGNATURES = {"event": "build_status", "cloudevent": "build_status_cloudevent"}
TOPIC = "cloud-builds"
ROTATED_TOKEN = "rotated-repository-access-token-Ou1jnls1zC2glAq701-J2kII"
WEBAPP_TOKEN = "webapp-access-token-e2e-hZ1EsA8XxuuyVeE8INLwCJ_j"
INFRA_TOKEN = "infra-access-token-e2e-T7j0off8Tiv742yLktRQ5Cue"
SERVER_TOKEN = "dc-e2e-http-access-token-5p1FeI8R0iBTkkFKegJUcCGK"
TEAM_A_TOKEN = "team-a-e2e-token-l2Hdh2xz5kVzZO26yhhV6j-e"
TEAM_B_TOKEN = "team-b-e2e-token-PZbwBBT3qqAvps22vazWKRGq"


@pytest.fixture(scope="session")
def pubsub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    if shutil.which("gcloud") is None:
        if os.environ.get("CI"):
            pytest.fail("gcloud is not installed: CI must run the end-to-end tests with the Pub/Sub emulator")
        pytest.skip("gcloud is not installed: the Pub/Sub emulator comes with the Google Cloud CLI")
    emulator = PubSubEmulator(tmp_path_factory.mktemp("pubsub"))
    emulator.create_topic(TOPIC)
    yield emulator
    emulator.stop()


@dataclass
class Deployment:
    pubsub: PubSubEmulator
    function: FunctionServer
    bitbucket: Server

    def publish(self, *builds: dict[str, Any]) -> None:
        for b in builds:
            self.pubsub.publish(TOPIC, b)

    def wait_for(self, expected: list[tuple[str, str]], repo: str = "acme/webapp", timeout: float = 60) -> None:
        def arrived() -> bool:
            return sorted((s["state"], s["description"]) for s in shown(self.bitbucket, repo)) == sorted(expected)

        try:
            wait_until(arrived, timeout, f"Bitbucket to show {expected}")
        except TimeoutError:
            log = self.function.process.output()[-3000:]
            raise AssertionError(f"Bitbucket shows {shown(self.bitbucket, repo)}; function log:\n{log}") from None


@pytest.fixture(params=sorted(SIGNATURES))
def deployed(request, pubsub, bitbucket, google, storage, tmp_path) -> Iterator[Deployment]:
    """The function deployed with one signature, its credentials KMS-encrypted in a bucket."""
    signature = request.param
    storage.put("e2e-secrets", "credentials.enc", google.app.encrypt(KMS_KEY, json.dumps({"token": TOKEN}).encode()))
    env = {
        "BITBUCKET_API_URL": bitbucket.api_url,
        "SECRETS_BUCKET": "e2e-secrets",
        "SECRETS_OBJECT": "credentials.enc",
        "KMS_CRYPTO_KEY_ID": KMS_KEY,
        "KMS_API_ENDPOINT": google.endpoint,
        "STORAGE_EMULATOR_HOST": storage.host,
        "GOOGLE_APPLICATION_CREDENTIALS": str(google.sa_file),
        "HTTP_RETRY_BACKOFF_SECONDS": "0.01",
        "HTTP_TIMEOUT_SECONDS": "1",
    }
    function = FunctionServer(SIGNATURES[signature], signature, env, tmp_path / "function.log")
    subscription = pubsub.create_push_subscription(TOPIC, f"bitbucket-build-status-{signature}", function.url)
    yield Deployment(pubsub, function, bitbucket)
    pubsub.delete_subscription(subscription)
    function.stop()


def test_a_lifecycle_published_by_cloud_build_ends_as_the_builds_result(deployed):
    deployed.publish(build("QUEUED"), build("WORKING"), build("SUCCESS"))
    deployed.wait_for([("SUCCESSFUL", "Succeeded in 3m 12s")])
    transitions = [s["state"] for _, s in deployed.bitbucket.app.history]
    assert transitions[-1] == "SUCCESSFUL"
    assert "SUCCESSFUL" not in transitions[:-1]


def test_out_of_order_and_duplicated_messages_never_move_a_status_backwards(deployed):
    deployed.publish(build("FAILURE", "b-1"), build("WORKING", "b-1"), build("QUEUED", "b-1"), build("FAILURE", "b-1"))
    deployed.publish(build("QUEUED", "b-1"), build("WORKING", "b-1"))
    deployed.wait_for([("FAILED", "Failed after 3m 12s")])
    deliveries = lambda: sum(  # noqa: E731
        1 for line in deployed.function.log_lines() if line.get("build_id") == "b-1"
    )
    wait_until(lambda: deliveries() >= 6, 30, "all six messages to be handled")
    assert deployed.bitbucket.app.went_backwards() == []


def test_a_failing_bitbucket_is_outlasted_by_redelivery(deployed):
    # Every attempt of the first delivery fails: the function raises, the
    # framework answers 500 and the emulator pushes the message again.
    deployed.bitbucket.app.fail_next(*["503"] * 5)
    deployed.publish(build("SUCCESS", "b-1"))
    deployed.wait_for([("SUCCESSFUL", "Succeeded in 3m 12s")])
    retried = [line for line in deployed.function.log_lines() if line["message"].startswith("Will retry")]
    assert len(retried) >= 1


def test_a_share_of_failing_calls_still_ends_in_the_right_states(deployed):
    deployed.bitbucket.app.fault_rate = 0.4
    deployed.bitbucket.app.fault_delay = 1.5
    for n, final in enumerate(["SUCCESS", "FAILURE", "CANCELLED", "SUCCESS"]):
        commit = f"{n:040x}"
        deployed.publish(*(build(s, f"b-{n}", commit=commit) for s in ("QUEUED", "WORKING", final)))
    expected = {0: "SUCCESSFUL", 1: "FAILED", 2: "STOPPED", 3: "SUCCESSFUL"}

    def all_final() -> bool:
        return all(
            [s["state"] for s in deployed.bitbucket.app.shown("acme", "webapp", f"{n:040x}")] == [state]
            for n, state in expected.items()
        )

    try:
        wait_until(all_final, 90, "every build's final state")
    except TimeoutError:
        shown_now = {n: deployed.bitbucket.app.shown("acme", "webapp", f"{n:040x}") for n in expected}
        b0 = [line for line in deployed.function.process.output().splitlines() if "b-0" in line or "Traceback" in line]
        raise AssertionError(f"{shown_now}\n" + "\n".join(b0)) from None
    assert deployed.bitbucket.app.went_backwards() == []


@pytest.fixture(scope="module")
def demo() -> str:
    """`make demo`'s output, run once for the tests that read it."""
    result = subprocess.run(
        [sys.executable, "-m", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_the_demo_runs_to_the_end_and_shows_every_kind_of_transition(demo):
    out = demo
    assert "Pub/Sub emulator" in out
    assert "INPROGRESS (Queued) → INPROGRESS (Running) → FAILED (Failed after 2m 6s" in out
    assert "INPROGRESS (Running) → SUCCESSFUL (Succeeded in 3m 12s)" in out
    assert "FAILED (Timed out after 10m) → INPROGRESS (Queued) → INPROGRESS (Running) → SUCCESSFUL" in out
    assert "Skipped: the build's git source 'https://github.com/acme/website.git' is not on bitbucket.org" in out
    assert "PLAT/payments @ 555555555555  (refs/heads/release/2.4)" in out
    assert (
        "INPROGRESS (Queued) → INPROGRESS (Running) → SUCCESSFUL (Succeeded in 6m 24s: 11 tests passed (1 skipped))"
        in out
    )
    assert "Did not post INPROGRESS (Running): Bitbucket already shows this or a later state" in out
    assert "written by   credential entry 1 (the webapp repository's access token)" in out
    assert "written by   credential entry 2 (the ops repositories' access token)" in out
    assert "      | Last lines of step 2 (unit-tests):" in out  # why it failed, in the failed run's report
    assert "Failed after 2m 6s: 1 of 3 tests failed" in out  # its JUnit file, copied before the step failed
    assert "testResults  {'successful': 11, 'failed': 0, 'skipped': 1}" in out  # a passing build's artifacts
    assert "annotation   HIGH   auth/login_test.go:42  github.com/acme/webapp/auth.TestLogin: " in out  # test and log


def jira_shows(out: str) -> dict[str, list[dict[str, Any]]]:
    """What the demo prints of each Jira issue: its builds and deployments, each a dict of its printed fields."""
    section = out.split("\nWhat Jira ", 1)[1].split("\nThe function's log", 1)[0]
    shown: dict[str, list[dict[str, Any]]] = {}
    for line in section.splitlines():
        if issue := re.fullmatch(r"  ([A-Z][A-Z0-9_]*-\d+)  .*", line):
            entities = shown[issue[1]] = []
        elif entity := re.fullmatch(r"    (build|deployment) +(\w+) +#(\d+)  (.*)", line):
            entities.append({"kind": entity[1], "state": entity[2], "number": int(entity[3]), "name": entity[4]})
        elif field := re.fullmatch(r"      (\w+) +(.*)", line):
            entities[-1][field[1]] = field[2]
    return shown


def test_the_demo_shows_on_each_jira_issue_its_builds_once_with_their_final_state_and_the_deployment(demo):
    shown = jira_shows(demo)
    assert {key: [(e["kind"], e["state"], e["name"]) for e in entities] for key, entities in shown.items()} == {
        "ABC-123": [  # its branch, feature/ABC-123-login: the failed build and the fix's
            ("build", "failed", "webapp-pull-request 7d1c9a52"),
            ("build", "successful", "webapp-pull-request 8e2f0b63"),
        ],
        "ABC-124": [("build", "successful", "webapp-pull-request 8e2f0b63")],  # the fix's commit message
        "OPS-7": [("build", "successful", "infra-webhook wh-5150")],  # _JIRA_ISSUES
        "PAY-42": [  # the Data Center commit's message; _DEPLOY_ENVIRONMENT=production
            ("build", "successful", "payments-release 9a0b1c2d"),
            ("deployment", "successful", "payments-release 9a0b1c2d to production (production)"),
        ],
    }
    failed, fixed = shown["ABC-123"]
    assert (fixed["pipeline"], fixed["number"] > failed["number"]) == (failed["pipeline"], True)
    assert failed["tests"] == "2 passed, 1 failed, 0 skipped of 3"
    assert shown["PAY-42"][0]["tests"] == "11 passed, 0 failed, 1 skipped of 12"
    assert fixed["url"].endswith("/8e2f0b63-login-2?project=1234")
    assert fixed["commit"] == "222222222222 (feature/ABC-123-login) of https://bitbucket.org/acme/webapp"
    assert "deployment   SUCCESSFUL  to production (PRODUCTION)" in demo  # on the Data Center commit
    # one call per state (the late WORKING sends nothing), one token and one site lookup for the instance
    assert (
        "Jira was sent 12 builds and 3 deployments (1 token, 1 site lookup), every body valid against Atlassian's "
        "OpenAPI description" in demo
    )
    assert "Jira entry 4 took the build; it knows no issue OPS-8" in demo  # a key the site does not know


def test_a_binary_mode_cloudevent_from_eventarc_lands_with_credentials_from_secret_manager(bitbucket, google, tmp_path):
    """What 2nd gen delivers: ce-* headers, the Pub/Sub push body as the HTTP body; credentials
    read from Secret Manager by the real client library."""
    secret = "projects/local-project/secrets/e2e-binary"
    google.app.add_secret_version(secret, json.dumps({"token": TOKEN}).encode())
    env = {
        "BITBUCKET_API_URL": bitbucket.api_url,
        "CREDENTIALS_SECRET": secret,
        "SECRET_MANAGER_API_ENDPOINT": google.endpoint,
        "GOOGLE_APPLICATION_CREDENTIALS": str(google.sa_file),
        "HTTP_RETRY_BACKOFF_SECONDS": "0.01",
    }
    reads = google.app.counts["secretmanager.access"]
    function = FunctionServer("build_status_cloudevent", "cloudevent", env, tmp_path / "function.log")
    try:
        for n, status in enumerate(("QUEUED", "WORKING", "SUCCESS")):
            headers = {
                "ce-id": f"e2e-{n}",
                "ce-specversion": "1.0",
                "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
                "ce-source": "//pubsub.googleapis.com/projects/acme-ci/topics/cloud-builds",
                "ce-time": now(),
                "Content-Type": "application/json",
            }
            response = requests.post(function.url, json=push_body(build(status), str(n)), headers=headers, timeout=30)
            assert response.status_code == 200, function.process.output()[-2000:]
    finally:
        function.stop()
    assert [(s["state"], s["description"]) for s in shown(bitbucket)] == [("SUCCESSFUL", "Succeeded in 3m 12s")]
    assert google.app.counts["secretmanager.access"] - reads == 1  # once for the instance, not once per event


def test_credentials_from_a_mounted_file_rotate_on_the_running_function(pubsub, bitbucket, tmp_path):
    """The default deployment: the secret mounted as a file. A new version replaces the file's content;
    the old token is revoked; the same instance posts the next events with the new one."""
    credentials = tmp_path / "secrets" / "bitbucket-credentials.json"
    credentials.parent.mkdir()
    credentials.write_text(json.dumps({"token": TOKEN}))
    env = {
        "BITBUCKET_API_URL": bitbucket.api_url,
        "BITBUCKET_CREDENTIALS_FILE": str(credentials),
        "HTTP_RETRY_BACKOFF_SECONDS": "0.01",
    }
    function = FunctionServer("build_status_cloudevent", "cloudevent", env, tmp_path / "function.log")
    subscription = pubsub.create_push_subscription(TOPIC, "bitbucket-build-status-file", function.url)
    deployment = Deployment(pubsub, function, bitbucket)
    try:
        deployment.publish(build("QUEUED", "b-1"), build("WORKING", "b-1"), build("SUCCESS", "b-1"))
        deployment.wait_for([("SUCCESSFUL", "Succeeded in 3m 12s")])
        bitbucket.app.revoke_all()
        bitbucket.app.accept_token(ROTATED_TOKEN)
        credentials.write_text(json.dumps({"token": ROTATED_TOKEN}))
        deployment.publish(build("QUEUED", "b-2", commit="b" * 40), build("FAILURE", "b-2", commit="b" * 40))
        wait_until(lambda: [s["state"] for s in shown(bitbucket, commit="b" * 40)] == ["FAILED"], 60, "build b-2")
        assert function.process.popen.poll() is None  # one instance throughout
        assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]
    finally:
        pubsub.delete_subscription(subscription)
        function.stop()


def test_a_document_of_two_tokens_routes_each_repository_to_its_own_through_pubsub(pubsub, bitbucket, tmp_path):
    """Two repository access tokens, each reaching only its repository (a Standard plan's setup)."""
    bitbucket.app.revoke_all()
    bitbucket.app.accept_token(WEBAPP_TOKEN, {"acme/webapp"})
    bitbucket.app.accept_token(INFRA_TOKEN, {"acme/infra"})
    credentials = tmp_path / "bitbucket-credentials.json"
    document = [
        {"token": WEBAPP_TOKEN, "repositories": ["acme/webapp"]},
        {"token": INFRA_TOKEN, "repositories": ["acme/infra"]},
    ]
    credentials.write_text(json.dumps(document))
    env = {"BITBUCKET_API_URL": bitbucket.api_url, "BITBUCKET_CREDENTIALS_FILE": str(credentials)}
    function = FunctionServer("build_status", "event", env, tmp_path / "function.log")
    subscription = pubsub.create_push_subscription(TOPIC, "bitbucket-build-status-two-tokens", function.url)
    deployment = Deployment(pubsub, function, bitbucket)
    try:
        for repo in ("acme/webapp", "acme/infra", "acme/unknown"):
            deployment.publish(*(build(s, f"b-{repo}", repo=repo) for s in ("QUEUED", "WORKING", "SUCCESS")))
        deployment.wait_for([("SUCCESSFUL", "Succeeded in 3m 12s")], repo="acme/webapp")
        deployment.wait_for([("SUCCESSFUL", "Succeeded in 3m 12s")], repo="acme/infra")
        wait_until(lambda: len(function.log_lines()) >= 9, 30, "every message to be handled")
    finally:
        pubsub.delete_subscription(subscription)
        function.stop()
    assert shown(bitbucket, "acme/webapp")[0]["_creator"] == token_identity(WEBAPP_TOKEN)
    assert shown(bitbucket, "acme/infra")[0]["_creator"] == token_identity(INFRA_TOKEN)
    assert not [c for c in bitbucket.app.calls if "/acme/unknown/" in c.path]
    unknown = [line["message"] for line in function.log_lines() if line.get("build_id") == "b-acme/unknown"]
    assert unknown == ["Skipped: no entry of the credentials serves repository acme/unknown, so nothing is sent"] * 3


def test_data_center_and_cloud_builds_land_on_their_sites_through_pubsub(pubsub, bitbucket, google, tmp_path):
    """A server behind a private CA under a context path, a clone URL build and a connected repository
    of a Data Center connection beside a Bitbucket Cloud one, through the emulator and functions-framework."""
    ca = certificate_authority("Acme Internal CA")
    server_app = DataCenter()
    server_app.accept_token(SERVER_TOKEN)
    server = server_app.serve(ssl_context=signed_by(ca, tmp_path))
    url = DataCenter.url(server)
    google.app.repositories[connected_repository("PLAT/payments")] = f"{url}/scm/plat/payments.git"
    credentials = tmp_path / "bitbucket-credentials.json"
    credentials.write_text(
        json.dumps([{"token": TOKEN}, {"server": url, "token": SERVER_TOKEN, "ca_certificate": ca[0]}])
    )
    env = {
        "BITBUCKET_API_URL": bitbucket.api_url,
        "BITBUCKET_CREDENTIALS_FILE": str(credentials),
        "CLOUD_BUILD_API_ENDPOINT": google.endpoint,
        "LOGGING_API_ENDPOINT": google.endpoint,
        "GOOGLE_APPLICATION_CREDENTIALS": str(google.sa_file),
    }
    function = FunctionServer("build_status_cloudevent", "cloudevent", env, tmp_path / "function.log")
    subscription = pubsub.create_push_subscription(TOPIC, "bitbucket-build-status-dc", function.url)
    cloned = [build(s, "dc-1", source="git") for s in ("QUEUED", "WORKING", "SUCCESS")]
    for b in cloned:
        b["source"]["gitSource"]["url"] = f"{url}/scm/plat/api.git"
    connected = [build(s, "dc-2", source="connection", repo="PLAT/payments") for s in ("QUEUED", "WORKING", "FAILURE")]
    cloud = [build(s, "cloud-1", source="connection") for s in ("QUEUED", "WORKING", "SUCCESS")]
    try:
        for b in (*cloned, *connected, *cloud):
            pubsub.publish(TOPIC, b)

        def landed() -> bool:  # every status, and the Code Insights report of each result
            return (
                [s["state"] for s in server_app.shown("PLAT", "api", builds_commit)] == ["SUCCESSFUL"]
                and [s["state"] for s in server_app.shown("PLAT", "payments", builds_commit)] == ["FAILED"]
                and [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]
                and [r["result"] for r in server_app.shown_reports("PLAT", "payments", builds_commit)] == ["FAIL"]
                and [r["result"] for r in bitbucket.app.shown_reports("acme", "webapp", builds_commit)] == ["PASSED"]
            )

        builds_commit = cloned[0]["substitutions"]["COMMIT_SHA"]
        wait_until(landed, 60, "every build on its site")
    finally:
        pubsub.delete_subscription(subscription)
        function.stop()
        server.stop()
    assert server_app.shown("PLAT", "api", builds_commit)[0]["ref"] == "refs/heads/feature/fish"
    assert server_app.went_backwards() == []
    assert all(TOKEN not in header for header in server_app.authorizations)


def test_one_relay_serves_two_projects_and_the_three_forged_deliveries_write_nothing(pubsub, bitbucket, tmp_path):
    """Topics in three projects; in the hub, push subscriptions as `make deploy BUILD_PROJECTS=...` makes
    them (the endpoint's path names the topic); two teams' tokens limited to their projects."""
    team_a, team_b = TEAM_A_TOKEN, TEAM_B_TOKEN
    bitbucket.app.revoke_all()
    bitbucket.app.accept_token(team_a, {"acme/a-web"})
    bitbucket.app.accept_token(team_b, {"acme/b-web"})
    document = [
        {"token": team_a, "projects": ["team-a"], "repositories": ["acme/a-*"]},
        {"token": team_b, "projects": ["team-b"], "repositories": ["acme/b-*"]},
    ]
    remember_stored(document)
    env = {
        "BITBUCKET_API_URL": bitbucket.api_url,
        "BITBUCKET_CREDENTIALS": json.dumps(document),
        "BUILD_PROJECTS": f"{pubsub.project} team-a team-b",
        "CODE_INSIGHTS": "off",
    }
    function = FunctionServer("build_status_cloudevent", "cloudevent", env, tmp_path / "function.log")
    subscriptions = []
    for project in ("team-a", "team-b", "team-c"):
        topic = f"projects/{project}/topics/{TOPIC}"
        pubsub.session.put(f"{pubsub.url}/{topic}", json={}, timeout=10)
        name = f"projects/{pubsub.project}/subscriptions/bitbucket-build-status-{project}"
        body = {"topic": topic, "pushConfig": {"pushEndpoint": f"{function.url}{topic}"}, "ackDeadlineSeconds": 10,
                "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "2s"}}  # fmt: skip
        pubsub.session.put(f"{pubsub.url}/{name}", json=body, timeout=10).raise_for_status()
        subscriptions.append(name)

    def publish(project: str, b: dict) -> None:
        message = {"data": base64.b64encode(json.dumps(b).encode()).decode()}
        url = f"{pubsub.url}/projects/{project}/topics/{TOPIC}:publish"
        pubsub.session.post(url, json={"messages": [message]}, timeout=10).raise_for_status()

    def of(project: str, repo: str, build_id: str) -> dict:
        b = build("SUCCESS", build_id, repo=repo, commit=f"{len(build_id):040x}")
        b["projectId"] = project
        return b

    try:
        publish("team-a", of("team-a", "acme/a-web", "a-1"))
        publish("team-b", of("team-b", "acme/b-web", "b-01"))
        publish("team-a", of("team-b", "acme/b-web", "forged-1"))  # team A's topic claiming team B's project
        publish("team-a", of("team-a", "acme/b-web", "forged-02"))  # team A's project, team B's repository
        publish("team-c", of("team-c", "acme/a-web", "forged-003"))  # a project the deployment does not serve

        def said() -> list[dict]:
            return [line for line in function.log_lines() if line.get("build_id")]

        wait_until(lambda: len(said()) == 5, 60, "a line for each of the five deliveries")
    finally:
        for name in subscriptions:
            pubsub.delete_subscription(name)
        function.stop()
    lines = {line["build_id"]: line for line in said()}
    assert lines["a-1"]["message"].startswith("Posted SUCCESSFUL")
    assert lines["b-01"]["message"].startswith("Posted SUCCESSFUL")
    assert "claims project 'team-b' but was published to project 'team-a''s topic" in lines["forged-1"]["message"]
    assert lines["forged-02"]["message"].startswith("Skipped: no entry of the credentials serves repository acme/b-web")
    assert "project 'team-c' is not one this deployment serves" in lines["forged-003"]["message"]
    written = [(c.path, c.method) for c in bitbucket.app.status_calls() if c.method == "POST"]
    assert len(written) == 2  # the two teams' builds, nothing forged
    assert [s["url"].rsplit("/", 1)[-1].split("?")[0] for s in bitbucket.app.shown("acme", "b-web", f"{4:040x}")] == [
        "b-01"
    ]
