"""A morning of builds, end to end on loopback, with no Google or Atlassian account.

Starts the Bitbucket stand-in, a Bitbucket Data Center stand-in (TLS from a private
CA, under a context path), the storage emulator with the credentials (two
repository access tokens, each serving its own repositories, and the server's
token with its CA) KMS-encrypted in a bucket, Cloud Build's API for the connected
repositories, a local KMS, a Jira Software Cloud stand-in (the site `acme`, told
of the builds through the same credentials document's Jira entry), the Pub/Sub
emulator (when `gcloud` is installed) and functions-framework serving main.py;
publishes the morning's Cloud Build messages; prints what Bitbucket shows, what
Jira shows on each issue, and what the function logged; stops everything.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from standins.bitbucket import Bitbucket, token_identity
from standins.builds import build, connected_repository, push_body
from standins.datacenter import DataCenter
from standins.google import Google, Storage
from standins.jira import Jira
from standins.processes import FunctionServer, PubSubEmulator, wait_until
from standins.tls import certificate_authority, signed_by

# Two repository access tokens, as a team on a Standard plan has: each reaches only its repositories;
# and an HTTP access token of the company's own Bitbucket Data Center, whose certificate a private CA signed.
WEBAPP_TOKEN = "demo-webapp-token-tj995UhwodFpQY3rUEnEjmae"
OPS_TOKEN = "demo-ops-token-xSb9Y2ujodvCHkCOEzdOV0A3"
SERVER_TOKEN = "demo-data-center-token-5xY_GHdUuSB9Snxfk-5eubL3"
# OAuth credentials a Jira site admin created (Jira settings → Apps → OAuth credentials: builds and deployments).
JIRA_CLIENT_ID = "demo-cloud-build-relay"  # not a secret
JIRA_CLIENT_SECRET = "demo-jira-secret-BvOmAs1dejnEoLhO1Nc3lZOOG75MWZg8"
JIRA_ISSUES = {  # the issues of the Jira site `acme` (key → summary)
    "ABC-123": "Log in with an e-mail address",
    "ABC-124": "An address typed in capitals fails to log in",
    "OPS-7": "Two instances behind the load balancer",
    "PAY-42": "Refunds settle in the ledger",
}


def credentials(server: str, ca: str, jira_site: str) -> list[dict[str, Any]]:
    return [
        {"token": WEBAPP_TOKEN, "repositories": ["acme/webapp"]},
        {"token": OPS_TOKEN, "repositories": ["acme_ops/*", "acme/infra"]},
        {"server": server, "token": SERVER_TOKEN, "ca_certificate": ca},
        {"jira": jira_site, "client_id": JIRA_CLIENT_ID, "client_secret": JIRA_CLIENT_SECRET},
    ]


KMS_KEY = "projects/demo/locations/global/keyRings/bitbucket-build-status/cryptoKeys/credentials"
START = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0)


def at(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def lifecycle(final: str, build_id: str, minute: float, took: float, **kwargs: Any) -> list[dict[str, Any]]:
    """QUEUED, WORKING and the final message of one build, as Cloud Build publishes them."""
    messages = []
    for status in ("QUEUED", "WORKING", final):
        b = build(status, build_id, **kwargs)
        b["createTime"] = at(minute)
        if status != "QUEUED":
            b["startTime"] = at(minute + 0.2)
        if status == final:
            b["finishTime"] = at(minute + 0.2 + took)
        messages.append(b)
    return messages


# What the failing pull request's unit tests printed (go test -fullpath), as Cloud Logging keeps it.
FAILED_STEP_LOG = [
    "go: downloading github.com/acme/webapp/internal v0.0.0",
    "=== RUN   TestLogin",
    '    /workspace/auth/login_test.go:42: Login("ada@acme.example") = "ADA@ACME.EXAMPLE", want "ada@acme.example"',
    "--- FAIL: TestLogin (0.00s)",
    "=== RUN   TestLogout",
    "--- PASS: TestLogout (0.00s)",
    "FAIL",
    "FAIL\tgithub.com/acme/webapp/auth\t0.012s",
    "FAIL",
]


# The JUnit files the two builds leave in Cloud Storage: the failing one copies gotestsum's file before it fails
# (_BITBUCKET_TEST_REPORTS), the passing one lists Surefire's among its artifacts (results.artifactManifest).
REPORTS_BUCKET = "demo-test-reports"
LOGIN_JUNIT = """<testsuites tests="3" failures="1">
  <testsuite name="github.com/acme/webapp/auth" tests="3" failures="1">
    <testcase classname="github.com/acme/webapp/auth" name="TestLogin">
      <failure message="Failed">=== RUN   TestLogin
    /workspace/auth/login_test.go:42: Login("ada@acme.example") = "ADA@ACME.EXAMPLE", want "ada@acme.example"
--- FAIL: TestLogin (0.00s)</failure>
    </testcase>
    <testcase classname="github.com/acme/webapp/auth" name="TestLogout"/>
    <testcase classname="github.com/acme/webapp/auth" name="TestSession"/>
  </testsuite>
</testsuites>"""
PAYMENTS_JUNIT = (
    "<testsuite name='com.acme.payments.LedgerTest' tests='12'>"
    + "".join(f"<testcase classname='com.acme.payments.LedgerTest' name='case{n}'/>" for n in range(11))
    + "<testcase classname='com.acme.payments.LedgerTest' name='archive'><skipped/></testcase></testsuite>"
)


# What the built commits' messages say, read by the function for the Jira issues they name: on Bitbucket Cloud, and
# the payments commit's on the Data Center server.
COMMIT_MESSAGES = {
    ("acme/webapp", "1" * 40): "Log in with the e-mail address as typed",
    ("acme/webapp", "2" * 40): "Compare addresses without case\n\nABC-124: an address in capitals logs in",
    ("acme_ops/legacy_app", "3" * 40): "Bump the base image",
    ("acme/infra", "4" * 40): "Raise the instance count to two",
}
PAYMENTS_MESSAGE = "PAY-42: settle refunds in the ledger"


def morning() -> list[tuple[str, list[dict[str, Any]]]]:
    login = dict(
        repo="acme/webapp", branch="feature/ABC-123-login", source="connection",
        trigger_id="0b6a9f3e-77d2-4c55-9e61-webapp000pr1", trigger_name="webapp-pull-request",
    )  # fmt: skip
    failed = lifecycle("FAILURE", "7d1c9a52-login-1", 0, 2.1, commit="1" * 40, **login)
    failed[-1]["failureInfo"] = {"type": "USER_BUILD_STEP", "detail": 'Build step 2 "go test ./..." failed'}
    failed[-1]["substitutions"]["_BITBUCKET_TEST_REPORTS"] = f"gs://{REPORTS_BUCKET}/7d1c9a52-login-1/"
    failed[-1]["steps"] = [
        {"id": "vet", "name": "golang:1.23", "args": ["go", "vet", "./..."], "status": "SUCCESS"},
        {"id": "lint", "name": "golangci/golangci-lint", "args": ["golangci-lint", "run"], "status": "FAILURE",
         "allowFailure": True, "exitCode": 1},
        {"id": "unit-tests", "name": "golang:1.23", "args": ["go", "test", "./..."], "status": "FAILURE",
         "exitCode": 1},
        {"id": "deploy-preview", "name": "gcr.io/google.com/cloudsdktool/cloud-sdk", "args": ["gcloud", "run"],
         "status": "QUEUED"},
    ]  # fmt: skip
    fixed = lifecycle("SUCCESS", "8e2f0b63-login-2", 14, 3.2, commit="2" * 40, **login)
    # The old mirror setup: workspace and slug both hold '_', so the first split 404s.
    legacy = dict(
        repo="acme_ops/legacy_app", branch="main", commit="3" * 40, source="mirror",
        trigger_id="5e0f2a61-9b7c-4d1e-8a3f-legacy000main", trigger_name="legacy-app-main",
    )  # fmt: skip
    flaky = lifecycle("TIMEOUT", "c0ffee00-main-1", 30, 10, **legacy)
    rerun = lifecycle("SUCCESS", "c0ffee00-main-2", 45, 4.5, **legacy)
    webhook = lifecycle(
        "SUCCESS", "wh-5150", 52, 1.1, repo="acme/infra", commit="4" * 40, branch="main",
        trigger_id=None, trigger_name="infra-webhook", source="webhook",
    )  # fmt: skip
    for message in webhook:  # the issues a build names itself: one the Jira site knows, one it does not
        message["substitutions"]["_JIRA_ISSUES"] = "OPS-7, OPS-8"
    github = build("SUCCESS", "gh-0042", source="none", trigger_name="github-app")
    github["source"] = {"gitSource": {"url": "https://github.com/acme/website.git", "revision": "main"}}
    late = dict(fixed[1])  # a WORKING message that Pub/Sub delivers again, after the result
    payments = lifecycle(
        "SUCCESS", "9a0b1c2d-payments-7", 58, 6.4, repo="PLAT/payments", commit="5" * 40, branch="release/2.4",
        trigger_id="77e1d0c4-8f2a-4b6e-9c3d-payments0rel", trigger_name="payments-release", source="connection",
    )  # fmt: skip
    payments[-1]["results"] = {"artifactManifest": f"gs://{REPORTS_BUCKET}/artifacts-9a0b1c2d-payments-7.json"}
    for message in payments:  # the release trigger deploys what it built
        message["substitutions"]["_DEPLOY_ENVIRONMENT"] = "production"
    return [
        ("08:00 a pull request's build fails", failed),
        ("08:14 the fix is pushed, and the build passes", fixed),
        ("08:30 main times out on the old mirror setup", flaky),
        ("08:45 a re-run of the same trigger passes", rerun),
        ("08:52 a webhook-triggered build of another repository", webhook),
        ("08:55 a GitHub build reaches the same topic", [github]),
        ("08:56 Pub/Sub delivers an old WORKING message again", [late]),
        ("08:58 the payments service builds from the company's own Bitbucket Data Center and deploys", payments),
    ]


def main() -> int:
    os.environ["NO_GCE_CHECK"] = "true"  # google-auth never looks for a metadata server: only loopback here
    workdir = Path(tempfile.mkdtemp(prefix="bitbucket-build-status-demo-"))
    stack: list[Any] = []
    try:
        bitbucket_app = Bitbucket(repositories={"acme/webapp", "acme_ops/legacy_app", "acme/infra"})
        bitbucket_app.accept_token(WEBAPP_TOKEN, {"acme/webapp"})
        bitbucket_app.accept_token(OPS_TOKEN, {"acme_ops/legacy_app", "acme/infra"})
        bitbucket_app.commit_messages.update(COMMIT_MESSAGES)
        bitbucket = bitbucket_app.serve()
        stack.append(bitbucket)
        private_ca = certificate_authority("Acme Internal CA")
        server_app = DataCenter(repositories={"PLAT/payments"})
        server_app.accept_token(SERVER_TOKEN)
        server_app.commit_messages[("PLAT/payments", "5" * 40)] = PAYMENTS_MESSAGE
        server = server_app.serve(ssl_context=signed_by(private_ca, workdir))
        stack.append(server)
        server_url = DataCenter.url(server)
        jira_app = Jira()
        jira = jira_app.serve()
        stack.append(jira)
        jira_site, cloud_id = jira_app.add_site("acme")
        jira_app.add_issues(cloud_id, *JIRA_ISSUES)
        jira_app.accept_client(JIRA_CLIENT_ID, JIRA_CLIENT_SECRET)
        google = Google().serve()
        stack.append(google)
        # What Cloud Build's API says of the two connected repositories (2nd-gen connections).
        google.app.repositories[connected_repository("acme/webapp")] = "https://bitbucket.org/acme/webapp.git"
        google.app.repositories[connected_repository("PLAT/payments")] = f"{server_url}/scm/plat/payments.git"
        # The failing build's log in Cloud Logging: the unit tests' own lines, which its report ends with
        google.app.write_log("acme-ci", "7d1c9a52-login-1", {'Step #2 - "unit-tests"': FAILED_STEP_LOG})
        storage = Storage()
        stack.append(storage)
        document = json.dumps(credentials(server_url, private_ca[0], jira_site)).encode()
        storage.put("demo-secrets", "bitbucket.json.enc", google.app.encrypt(KMS_KEY, document))
        storage.put(REPORTS_BUCKET, "7d1c9a52-login-1/auth.xml", LOGIN_JUNIT.encode())
        ledger = "surefire/TEST-com.acme.payments.LedgerTest.xml"
        generation = storage.put(REPORTS_BUCKET, ledger, PAYMENTS_JUNIT.encode())
        manifest = json.dumps({"location": f"gs://{REPORTS_BUCKET}/{ledger}#{generation}"})
        storage.put(REPORTS_BUCKET, "artifacts-9a0b1c2d-payments-7.json", manifest.encode())
        env = {
            "BITBUCKET_API_URL": bitbucket.api_url,
            "SECRETS_BUCKET": "demo-secrets",
            "SECRETS_OBJECT": "bitbucket.json.enc",
            "KMS_CRYPTO_KEY_ID": KMS_KEY,
            "KMS_API_ENDPOINT": google.endpoint,
            "STORAGE_EMULATOR_HOST": storage.host,
            "GOOGLE_APPLICATION_CREDENTIALS": str(google.service_account_file(workdir)),
            "CLOUD_BUILD_API_ENDPOINT": google.endpoint,
            "LOGGING_API_ENDPOINT": google.endpoint,
            "TEST_REPORT_BUCKETS": REPORTS_BUCKET,
            "JIRA_API_URL": jira.root,
        }
        function = FunctionServer("build_status_cloudevent", "cloudevent", env, workdir / "function.log")
        stack.append(function)
        print(f"Bitbucket stand-in  {bitbucket.api_url}")
        print(f"Data Center         {server_url} (TLS, certificate of a private CA)")
        print(f"storage emulator    {storage.host}   local KMS {google.endpoint}")
        print(f"Jira stand-in       {jira.root} (Atlassian's API; the site {jira_site})")
        print(f"function            {function.url} (functions-framework, build_status_cloudevent)")

        pubsub = None
        if shutil.which("gcloud"):
            pubsub = PubSubEmulator(workdir)
            stack.append(pubsub)
            pubsub.create_topic("cloud-builds")
            pubsub.create_push_subscription("cloud-builds", "bitbucket-build-status", function.url)
            print(f"Pub/Sub emulator    {pubsub.url} (topic cloud-builds, push subscription to the function)")
        else:
            print("gcloud is not installed: posting the push messages to the function directly, as Pub/Sub would")

        sent = 0
        for title, messages in morning():
            print(f"\n{title}")
            for message in messages:
                print(f"  publish {message['status']:<8} build {message['id']}")
                if pubsub:
                    pubsub.publish("cloud-builds", message)
                else:
                    requests.post(function.url, json=push_body(message, str(sent)), timeout=30)
                sent += 1
                # Cloud Build publishes one state change at a time; each is handled before the next, so the story
                # reads the same on a busy machine (the tests prove every order of delivery elsewhere)
                wait_until(lambda handled=sent: len(function.log_lines()) >= handled, 60, "the function to handle it")
        show(bitbucket_app)
        show_server(server_app, server_url)
        show_jira(jira_app, cloud_id, jira_site)
        print("\nThe function's log (one JSON object per line in Cloud Logging; shown here shortened):")
        for line in function.log_lines():
            signer = f"entry {line['credential']}" if "credential" in line else ""
            print(f"  {line['severity']:<8} {line.get('build_id', ''):<20} {signer:<8} {line['message']}")
        return 0
    finally:
        for part in reversed(stack):
            part.stop()
        shutil.rmtree(workdir, ignore_errors=True)


SIGNERS = {
    token_identity(WEBAPP_TOKEN): "credential entry 1 (the webapp repository's access token)",
    token_identity(OPS_TOKEN): "credential entry 2 (the ops repositories' access token)",
}


def show_server(server: DataCenter, url: str) -> None:
    print(f"\nWhat the Data Center server {url} shows, per commit:")
    for (repo, commit, key), status in server.statuses.items():
        print(f"\n  {repo} @ {commit[:12]}  ({status.get('ref', 'no ref')})")
        for name in ("key", "name", "parent", "state", "description", "url", "duration", "testResults"):
            print(f"    {name:<12} {status.get(name, '-')}")
        path = " → ".join(f"{s['state']} ({s['description']})" for i, s in server.history if i == (repo, commit, key))
        print(f"    history      {path}")
        for report in server.shown_reports(*repo.split("/"), commit):
            show_report(report)
        project, slug = repo.split("/")
        for deployment in server.deployments_for(project, slug, commit):
            environment = deployment["environment"]
            kind = f" ({environment['type']})" if "type" in environment else ""
            print(f"    deployment   {deployment['state']}  to {environment['displayName']}{kind}  "
                  f"#{deployment['deploymentSequenceNumber']}  {deployment['displayName']}")  # fmt: skip
            print(f"      url          {deployment['url']}")


def show_jira(jira: Jira, cloud_id: str, site: str) -> None:
    """What each issue's development panel and deployments view show: the builds and deployments that name it."""
    print(f"\nWhat Jira {site} shows, per issue:")
    for key, summary in JIRA_ISSUES.items():
        print(f"\n  {key}  {summary}")
        for shown in jira.builds_for(cloud_id, key):
            print(f"    build        {shown['state']:<11} #{shown['buildNumber']}  {shown['displayName']}")
            print(f"      pipeline     {shown['pipelineId']}")
            print(f"      description  {shown['description']}")
            if tests := shown.get("testInfo"):
                print(f"      tests        {tests['numberPassed']} passed, {tests['numberFailed']} failed, "
                      f"{tests['numberSkipped']} skipped of {tests['totalNumber']}")  # fmt: skip
            print(f"      url          {shown['url']}")
            [reference] = shown["references"]
            commit, branch = reference["commit"], reference.get("ref", {}).get("name", "-")
            print(f"      commit       {commit['id'][:12]} ({branch}) of {commit['repositoryUri']}")
            print(f"      issues       {', '.join(shown['issueKeys'])}")
        for shown in jira.deployments_for(cloud_id, key):
            environment, pipeline = shown["environment"], shown["pipeline"]
            print(f"    deployment   {shown['state']:<11} #{shown['deploymentSequenceNumber']}  "
                  f"{shown['displayName']} to {environment['displayName']} ({environment['type']})")  # fmt: skip
            print(f"      pipeline     {pipeline['id']} ({pipeline['displayName']})")
            print(f"      description  {shown['description']}")
            print(f"      url          {shown['url']}")
            print(f"      issues       {', '.join(v for a in shown['associations'] for v in a['values'])}")
    told = (
        f"Jira was sent {len(jira.build_calls())} builds and {len(jira.deployment_calls())} deployments "
        f"({jira.token_requests} token, {jira.tenant_info_requests} site lookup)"
    )
    if not jira.invalid:
        print(f"\n  {told}, every body valid against Atlassian's OpenAPI description")
        return
    print(f"\n  {told}; Atlassian's OpenAPI description refuses {len(jira.invalid)}:")
    for path, reason in jira.invalid:
        print(f"    {path}: {reason}")


def show(bitbucket: Bitbucket) -> None:
    print("\nWhat Bitbucket shows, per commit:")
    by_commit: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for (repo, commit, key), status in bitbucket.history:
        by_commit.setdefault((repo, commit), []).append((key, status))
    for (repo, commit), changes in by_commit.items():
        current = bitbucket.shown(*repo.split("/"), commit)
        for status in current:
            print(f"\n  {repo} @ {commit[:12]}  (branch {status['refname'] or '-'})")
            print(f"    key          {status['key']}")
            print(f"    name         {status['name']}")
            print(f"    state        {status['state']}")
            print(f"    description  {status['description']}")
            print(f"    url          {status['url']}")
            print(f"    written by   {SIGNERS.get(status['_creator'], status['_creator'])}")
            path = " → ".join(f"{s['state']} ({s['description']})" for k, s in changes if k == status["key"])
            print(f"    history      {path}")
        for report in bitbucket.shown_reports(*repo.split("/"), commit):
            show_report(report)
        for annotation in bitbucket.shown_annotations(*repo.split("/"), commit):
            where = f"{annotation.get('path', '-')}:{annotation.get('line', '-')}"
            print(f"    annotation   {annotation['severity']:<6} {where}  {annotation['summary']}")


def show_report(report: dict[str, Any]) -> None:
    """A Code Insights report as the commit's Reports panel shows it."""
    print(f"    report       {report['result']}  {report['title']}")
    for data in report["data"]:
        value = data["value"]
        if data["type"] == "DURATION":
            value = f"{value / 1000:.0f} s"
        elif data["type"] == "LINK":
            value = value["href"]
        print(f"      {data['title']:<13} {value}")
    for line in report["details"].splitlines():
        print(f"      | {line}")


if __name__ == "__main__":
    sys.exit(main())
