"""`make doctor`: a deployment's health, each check with the one thing to do, through the stand-ins (the deployment's
description as gcloud prints it, Cloud Build's list, Secret Manager, Cloud Logging, both Bitbucket sites); it
writes nothing, and never prints a credential."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import doctor
import relay.transport
from standins.bitbucket import REPOSITORY
from standins.builds import build, listed_build
from tests.conftest import DC_TOKEN, JIRA_CLIENT_SECRET, TOKEN, deliver, document, remember_stored

ROOT = Path(__file__).resolve().parents[1]
SECRET = "projects/acme-ci/secrets/bitbucket-build-status-credentials"
API_TOKEN = "api-repository-token-Ldzk1oN-ZGBVCMXAKbf0m1jU"


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def described(bitbucket: Any, **changes: Any) -> dict[str, Any]:
    """The deployed function as `gcloud functions describe --format=json` prints it (2nd gen)."""
    function = {
        "name": "projects/acme-ci/locations/europe-west1/functions/bitbucket-build-status",
        "state": "ACTIVE",
        "buildConfig": {"runtime": "python313", "entryPoint": "build_status_cloudevent"},
        "eventTrigger": {"pubsubTopic": "projects/acme-ci/topics/cloud-builds", "retryPolicy": "RETRY_POLICY_RETRY"},
        "serviceConfig": {
            "timeoutSeconds": 150, "maxInstanceRequestConcurrency": 80, "ingressSettings": "ALLOW_ALL",
            "environmentVariables": {"THREADS": "80", "BITBUCKET_CREDENTIALS_FILE": "/etc/secrets/bitbucket.json",
                                     "BITBUCKET_API_URL": bitbucket.api_url},
            "secretVolumes": [{"mountPath": "/etc/secrets", "projectId": "acme-ci",
                               "secret": "bitbucket-build-status-credentials",
                               "versions": [{"version": "latest", "path": "bitbucket.json"}]}],
        },
    }  # fmt: skip
    for path, value in changes.items():
        *parents, last = path.split("__")
        where = function
        for part in parents:
            where = where[part]
        where[last] = value
    return function


@pytest.fixture
def deployment(bitbucket, google, monkeypatch, tmp_path):
    """A healthy deployment: two entries (the webapp's token, the api's), each repository built once and shown."""
    entries = [{"token": TOKEN, "repositories": ["acme/webapp"]}, {"token": API_TOKEN, "repositories": ["acme/api"]}]
    remember_stored(entries)
    bitbucket.app.accept_token(API_TOKEN)
    google.app.add_secret_version(SECRET, json.dumps(entries).encode())
    monkeypatch.setenv("SECRET_MANAGER_API_ENDPOINT", google.endpoint)
    for repo, build_id in (("acme/webapp", "w-1"), ("acme/api", "a-1")):
        done = build("SUCCESS", build_id, repo=repo, createTime=ago(30))
        deliver(done)
        google.app.record(done)
    # the person's own credentials are not the deployment's: doctor reads the deployment's
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": "a-persons-own-token-jXRPc-3EE7EuK3r0DaVpx3ib"}))
    return tmp_path


def run_doctor(tmp_path: Path, function: dict[str, Any], *args: str) -> tuple[int, str]:
    (tmp_path / "function.json").write_text(json.dumps(function))
    out = io.StringIO()
    code = doctor.run(["--project", "acme-ci", "--region", "europe-west1", "--locations", "global",
                       "--function-config", str(tmp_path / "function.json"), *args], dict(os.environ), out)  # fmt: skip
    return code, out.getvalue()


def test_a_healthy_deployment_holds_every_check(deployment, bitbucket):
    writes = len([c for c in bitbucket.app.calls if c.method != "GET"])
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 0, out
    assert "\u2717" not in out
    assert "\u2713 acme/webapp: credential entry 1 reads it" in out
    assert "\u2713 acme/api: credential entry 2 reads it" in out
    assert "\u2713 every status shows its build's state (2 checked)" in out
    assert "All checks hold." in out
    assert len([c for c in bitbucket.app.calls if c.method != "GET"]) == writes  # it writes nothing
    assert TOKEN not in out
    assert API_TOKEN not in out


def test_a_revoked_second_credential_names_the_repository_the_entry_the_401_and_make_credentials(deployment, bitbucket):
    bitbucket.app.tokens.discard(API_TOKEN)  # revoked
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 1, out
    assert (
        "\u2717 acme/api: credential entry 2: Bitbucket answered 401: the credential was revoked or expired\n"
        "    \u2192 store a new credential: make credentials PROJECT=acme-ci < credentials.json"
    ) in out
    assert "\u2713 acme/webapp: credential entry 1 reads it" in out


def test_a_commit_left_on_running_is_found_with_the_make_resync_that_heals_it(deployment, bitbucket, google):
    created = ago(20)
    deliver(build("WORKING", "w-2", repo="acme/webapp", commit="2" * 40, createTime=created))
    google.app.record(build("FAILURE", "w-2", repo="acme/webapp", commit="2" * 40, createTime=created))
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 1, out
    assert "acme/webapp@222222222222 (webapp-pr): INPROGRESS \u2192 FAILED (build w-2)" in out
    assert f"\u2192 heal them: make resync PROJECT=acme-ci REGION=europe-west1 SINCE={created}" in out
    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", "2" * 40)] == ["INPROGRESS"]  # untouched


def test_the_functions_own_error_and_warning_lines_are_shown_with_their_counts(deployment, bitbucket, google):
    permission = (
        "Cloud Build's API could not say about projects/1234/locations/global/builds/x (answered 403): give the "
        "function's service account cloudbuild.builds.get (roles/cloudbuild.builds.viewer ..."
    )
    refused = "Configuration error: BITBUCKET_CREDENTIALS_FILE (/etc/secrets/bitbucket.json) cannot be read"
    google.app.write_function_log("acme-ci", "bitbucket-build-status", [
        ("ERROR", refused, ago(50)), ("ERROR", refused, ago(10)), ("WARNING", permission, ago(5)),
        ("INFO", "Posted SUCCESSFUL (Succeeded in 3m)", ago(4)), ("ERROR", "too old to count", ago(60 * 48)),
    ])  # fmt: skip
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 1, out
    assert f"   2 \u00d7 ERROR   {refused}" in out
    assert f"   1 \u00d7 WARNING {permission[:200]}" in out
    assert "Posted SUCCESSFUL" not in out
    assert "too old to count" not in out
    assert "\u2717 the function logged 2 ERROR lines since" in out


def test_an_untrusted_data_center_certificate_says_to_set_its_ca(bitbucket, google, monkeypatch, tmp_path, server):
    entries = document(server, ca_certificate=None)  # the server's CA is not given
    remember_stored(entries)
    google.app.add_secret_version(SECRET, json.dumps(entries).encode())
    monkeypatch.setenv("SECRET_MANAGER_API_ENDPOINT", google.endpoint)
    b = build("SUCCESS", "dc-1", source="git", createTime=ago(30))
    b["source"]["gitSource"]["url"] = f"{server.url}/scm/proj/repo.git"
    google.app.record(b)
    code, out = run_doctor(tmp_path, described(bitbucket))
    assert code == 1, out
    assert "PROJ/repo: the server's TLS certificate is not trusted" in out
    assert 'set "ca_certificate" of its entry to the PEM of the CA that signed it' in out
    assert DC_TOKEN not in out


def test_a_misconfigured_function_gets_one_fix_a_check(deployment, bitbucket):
    function = described(bitbucket, state="ACTIVE", serviceConfig__timeoutSeconds=60,
                         eventTrigger__retryPolicy="RETRY_POLICY_DO_NOT_RETRY")  # fmt: skip
    function["serviceConfig"]["environmentVariables"]["THREADS"] = "4"
    code, out = run_doctor(deployment, function)
    assert code == 1, out
    assert "\u2717 THREADS 4, a concurrency of 80: events wait in a queue" in out
    assert "\u2717 timeout 60 s, not above the event's deadline (120 s)" in out
    assert "\u2717 retry off: an event that fails once is lost" in out


def test_without_google_credentials_doctor_cannot_run_and_says_why(deployment, bitbucket, monkeypatch, capsys):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(deployment / "no-gcloud-config"))
    code, _ = run_doctor(deployment, described(bitbucket))
    assert code == 2
    assert "doctor cannot run" in capsys.readouterr().err


def test_make_doctor_reads_the_deployment_with_gcloud_and_writes_nothing(deployment, bitbucket, monkeypatch):
    (deployment / "function.json").write_text(json.dumps(described(bitbucket)))
    (deployment / "gcloud").write_text(FAKE_GCLOUD)
    (deployment / "gcloud").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{deployment}:{os.environ['PATH']}",
        "FAKE_FUNCTION": str(deployment / "function.json"),
    }
    ran = subprocess.run(
        ["make", "--no-print-directory", "doctor", "PROJECT=acme-ci", "REGION=europe-west1", "LOCATIONS=global"],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "All checks hold." in ran.stdout


FAKE_GCLOUD = """#!/usr/bin/env bash
# A stand-in for gcloud: the deployed function, as `gcloud functions describe` prints it; no subscriptions.
case " $* " in
  *" functions describe bitbucket-build-status --region=europe-west1 --project=acme-ci --format=json "*)
    cat "$FAKE_FUNCTION" ;;
  *" pubsub subscriptions list --project=acme-ci --format=json "*) echo "[]" ;;
  *) echo "unexpected: gcloud $*" >&2; exit 1 ;;
esac
"""


# --- the function's own lines ----------------------------------------------------------------------------------

RETRIED = "Will retry: Bitbucket answered 503 to reading a status"
REFUSED = "Configuration error: BITBUCKET_CREDENTIALS_FILE (/etc/secrets/bitbucket.json) cannot be read"


def test_one_error_behind_a_thousand_newer_warnings_is_found(deployment, bitbucket, google):
    """Cloud Logging answers at most 1,000 entries a page: the ERROR lines are asked for on their own."""
    google.app.write_function_log("acme-ci", "bitbucket-build-status", [
        ("ERROR", REFUSED, ago(60)), *(("WARNING", RETRIED, ago(50 - n * 0.04)) for n in range(1000)),
    ])  # fmt: skip
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 1, out
    assert f"   1 \u00d7 ERROR   {REFUSED}" in out
    assert "\u2717 the function logged 1 ERROR line since" in out
    assert "All checks hold." not in out


def test_one_error_line_alone_fails_the_check_of_the_functions_lines(deployment, bitbucket, google):
    google.app.write_function_log("acme-ci", "bitbucket-build-status", [("ERROR", REFUSED, ago(10))])
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 1, out
    assert "\u2717 the function logged 1 ERROR line since" in out
    assert "    \u2192 each says what to do: fix it, then make resync the period" in out


def test_the_functions_lines_are_read_from_since_on(deployment, bitbucket, google):
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    def at(seconds: float) -> str:
        return (since + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    google.app.write_function_log("acme-ci", "bitbucket-build-status", [
        ("ERROR", "at SINCE", at(0)), ("ERROR", "half a second after SINCE", at(0.5)),
        ("ERROR", "a second before SINCE", at(-1)),
    ])  # fmt: skip
    code, out = run_doctor(deployment, described(bitbucket), "--since", at(0))
    assert code == 1, out
    assert "   1 \u00d7 ERROR   at SINCE" in out
    assert "   1 \u00d7 ERROR   half a second after SINCE" in out
    assert "a second before SINCE" not in out
    assert f"\u2717 the function logged 2 ERROR lines since {at(0)}" in out


# --- what doctor holds and reads ----------------------------------------------------------------------------


MEASURED = """
import io, json, os, sys, tracemalloc
import doctor
from google.cloud import secretmanager  # what the credentials' source imports on its first read: not measured
tracemalloc.start()
code = doctor.run(sys.argv[1:], os.environ, io.StringIO())
print(json.dumps([code, tracemalloc.get_traced_memory()[1]]))
"""


def doctor_peak(tmp_path: Path, function: dict[str, Any], since: str) -> int:
    """The peak of what doctor allocates (tracemalloc), run in a process of its own (not the stand-ins')."""
    (tmp_path / "function.json").write_text(json.dumps(function))
    ran = subprocess.run(
        [sys.executable, "-c", MEASURED, "--project", "acme-ci", "--region", "europe-west1", "--locations", "global",
         "--since", since, "--function-config", str(tmp_path / "function.json")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    code, peak = json.loads(ran.stdout.splitlines()[-1])
    assert code == 0, ran.stdout + ran.stderr
    return int(peak)


def test_doctor_holds_the_newest_build_of_each_status_not_the_whole_listing(deployment, bitbucket, google):
    """3,000 listed builds of about 6 KB, re-runs of one commit: doctor keeps, as resync does, the newest build of
    each status (compressed) and lets the others go as the pages arrive, so listing 2,000 more costs next to
    nothing."""
    builds = [listed_build(0, ago(300 - n * 0.09)) for n in range(3000)]  # from 300 to 30 minutes ago
    for n, b in enumerate(builds):
        b["id"] = b["substitutions"]["BUILD_ID"] = f"rerun-{n:04}"
        b["logUrl"] = b["logUrl"].replace(listed_build(0, "")["id"], b["id"])
    google.app.record(*builds)
    deliver(builds[-1])  # the newest re-run's status is shown
    more = sum(len(json.dumps(b)) for b in builds[:2000])  # what the longer period lists beyond the shorter one

    shorter = doctor_peak(deployment, described(bitbucket), "120m")  # the newest 1,000
    longer = doctor_peak(deployment, described(bitbucket), "24h")  # all 3,000

    assert more > 12_000_000
    assert longer - shorter < more / 4, f"{longer - shorter:,} bytes more at the peak for {more:,} bytes more listed"


def test_doctors_dry_run_reads_no_failed_steps_log_and_no_visibility(deployment, bitbucket, google):
    """The statuses' check writes no report, so it reads nothing that only goes into one; the repository's own
    check reads it once."""
    created = ago(20)
    steps = [{"id": "unit-tests", "name": "python:3.12", "args": ["pytest"], "status": "FAILURE", "exitCode": 1}]
    deliver(build("WORKING", "w-2", repo="acme/webapp", commit="2" * 40, createTime=created))
    google.app.record(build("FAILURE", "w-2", repo="acme/webapp", commit="2" * 40, createTime=created, steps=steps))
    google.app.write_log("acme-ci", "w-2", {'Step #0 - "unit-tests"': ["E   assert 1 == 2"]}, last="")
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 1, out
    assert "acme/webapp@222222222222 (webapp-pr): INPROGRESS \u2192 FAILED (build w-2)" in out
    assert [f for f in google.app.log_filters if "build_id" in f] == []
    reads = Counter(c.path for c in bitbucket.app.calls if c.method == "GET" and REPOSITORY.fullmatch(c.path))
    assert reads == {"/2.0/repositories/acme/webapp": 1, "/2.0/repositories/acme/api": 1}


def test_doctors_dry_run_downloads_no_junit_file(deployment, bitbucket, google, storage, monkeypatch):
    """A build's JUnit files (up to 20 MB, seconds of processor time to parse) only end the description of a final
    state: the statuses' check writes none, so it downloads none of them."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage.host)
    created = ago(20)
    failing = (b'<testsuite name="tests.test_app"><testcase classname="tests.test_app" name="test_login">'
               b'<failure message="boom"/></testcase></testsuite>')  # fmt: skip
    for n in range(3):
        storage.put("acme-test-reports", f"doctor/w-2/junit-{n}.xml", failing)
    deliver(build("WORKING", "w-2", repo="acme/webapp", commit="2" * 40, createTime=created))
    failed = build("FAILURE", "w-2", repo="acme/webapp", commit="2" * 40, createTime=created)
    failed["substitutions"]["_BITBUCKET_TEST_REPORTS"] = "gs://acme-test-reports/doctor/w-2/"
    google.app.record(failed)
    function = described(bitbucket)
    function["serviceConfig"]["environmentVariables"]["TEST_REPORT_BUCKETS"] = "acme-test-reports"
    downloads = storage.downloads
    code, out = run_doctor(deployment, function)
    assert code == 1, out
    assert "acme/webapp@222222222222 (webapp-pr): INPROGRESS \u2192 FAILED (build w-2)" in out
    assert storage.downloads == downloads


# --- the function's settings and its deployment -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [("LOG_EXCERPTS", "public"), ("EVENT_DEADLINE_SECONDS", "two minutes"), ("TEST_REPORT_BUCKETS", "gs://x")],
)
def test_a_setting_the_function_refuses_is_a_failed_check_and_the_others_go_on(deployment, bitbucket, name, value):
    function = described(bitbucket)
    function["serviceConfig"]["environmentVariables"][name] = value
    code, out = run_doctor(deployment, function)
    assert code == 1, out
    assert f"\u2717 the function refuses its setting {name}, so every event fails: " in out
    assert "    \u2192 deploy it again: make deploy PROJECT=acme-ci REGION=..." in out
    assert [line for line in out.splitlines() if line.startswith("\u2717")] == [
        next(line for line in out.splitlines() if line.startswith(f"\u2717 the function refuses its setting {name}"))
    ]
    assert "\u2713 timeout 150 s, above the event's deadline (120 s)" in out
    assert "\u2713 acme/webapp: credential entry 1 reads it" in out
    assert "\u2713 every status shows its build's state (2 checked)" in out
    assert "\u2713 no ERROR line of the function since" in out


def test_a_function_deployed_without_a_timeout_is_said_to_have_the_default(deployment, bitbucket):
    function = described(bitbucket)
    del function["serviceConfig"]["timeoutSeconds"]
    code, out = run_doctor(deployment, function)
    assert code == 1, out
    assert "\u2717 no timeout set, so the default of 60 s, not above the event's deadline (120 s)" in out
    assert "None" not in out


@pytest.mark.parametrize(
    ("timeout", "deadline", "said"),
    [
        (120, None, "\u2717 timeout 120 s, not above the event's deadline (120 s): events are cut short"),
        (121, None, "\u2713 timeout 121 s, above the event's deadline (120 s)"),
        (140, "140", "\u2717 timeout 140 s, not above the event's deadline (140 s): events are cut short"),
        (150, "140", "\u2713 timeout 150 s, above the event's deadline (140 s)"),
    ],
)
def test_the_timeout_must_be_above_the_events_deadline_even_at_the_boundary(deployment, bitbucket, timeout, deadline,
                                                                               said):  # fmt: skip
    function = described(bitbucket, serviceConfig__timeoutSeconds=timeout)
    if deadline:
        function["serviceConfig"]["environmentVariables"]["EVENT_DEADLINE_SECONDS"] = deadline
    code, out = run_doctor(deployment, function)
    assert said in out
    assert code == (1 if said.startswith("\u2717") else 0), out


def test_a_credential_that_may_not_read_a_repository_is_told_its_scope(deployment, bitbucket):
    bitbucket.app.accept_token(API_TOKEN, repositories={"acme/elsewhere"})  # it no longer reaches acme/api
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 1, out
    assert (
        "\u2717 acme/api: credential entry 2: Bitbucket answered 403: the credential may not read it\n"
        "    \u2192 give it read on the repository (an access token's scope `repository`), then make credentials"
    ) in out
    assert "\u2713 acme/webapp: credential entry 1 reads it" in out


def test_the_make_resync_that_heals_starts_at_the_oldest_build_whose_status_disagrees(deployment, bitbucket, google):
    older, newer = ago(40), ago(20)
    for build_id, commit, created in (("w-2", "2" * 40, older), ("w-3", "3" * 40, newer)):
        deliver(build("WORKING", build_id, repo="acme/webapp", commit=commit, createTime=created))
        google.app.record(build("FAILURE", build_id, repo="acme/webapp", commit=commit, createTime=created))
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 1, out
    assert "\u2717 2 statuses disagree with Cloud Build" in out
    assert f"\u2192 heal them: make resync PROJECT=acme-ci REGION=europe-west1 SINCE={older}" in out


HUB = {"BUILD_PROJECTS": "acme-ci team-a"}
TEAM_TOPIC = "projects/team-a/topics/cloud-builds"
PUSHED = {
    "name": "projects/acme-ci/subscriptions/bitbucket-build-status-team-a",
    "topic": TEAM_TOPIC,
    "pushConfig": {"pushEndpoint": f"https://bitbucket-build-status-x7k2-ew.a.run.app/{TEAM_TOPIC}"},
}


def hub(bitbucket: Any, ingress: str) -> dict[str, Any]:
    function = described(bitbucket, serviceConfig__ingressSettings=ingress)
    function["serviceConfig"]["environmentVariables"].update(HUB)
    return function


def with_subscriptions(tmp_path: Path, *subscriptions: dict[str, Any]) -> tuple[str, str]:
    (tmp_path / "subscriptions.json").write_text(json.dumps(list(subscriptions)))
    return "--subscriptions", str(tmp_path / "subscriptions.json")


@pytest.mark.parametrize(
    ("ingress", "said"),
    [
        ("ALLOW_ALL", "\u2717 the function takes traffic from outside the project"),
        ("ALLOW_INTERNAL_AND_GCLB", "\u2717 the function takes traffic from outside the project"),
        ("ALLOW_INTERNAL_ONLY", "\u2713 the function takes traffic from inside the project only"),
    ],
)
def test_a_hub_must_take_traffic_from_inside_its_project_only(deployment, bitbucket, ingress, said):
    code, out = run_doctor(deployment, hub(bitbucket, ingress), *with_subscriptions(deployment, PUSHED))
    assert said in out
    assert code == (1 if said.startswith("\u2717") else 0), out


@pytest.mark.parametrize(
    "subscription",
    [
        {**PUSHED, "pushConfig": {}},
        {**PUSHED, "pushConfig": {"pushEndpoint": "https://bitbucket-build-status-x7k2-ew.a.run.app"}},
        {**PUSHED, "pushConfig": {"pushEndpoint": PUSHED["pushConfig"]["pushEndpoint"].replace("team-a", "team-b")}},
        {**PUSHED, "topic": "projects/team-b/topics/cloud-builds"},
    ],
    ids=["a pull subscription", "pushing to the root", "pushing as another project", "attached to another topic"],
)
def test_only_a_push_to_the_teams_topic_path_brings_its_builds(deployment, bitbucket, subscription):
    function = hub(bitbucket, "ALLOW_INTERNAL_ONLY")
    code, out = run_doctor(deployment, function, *with_subscriptions(deployment, subscription))
    assert code == 1, out
    assert "\u2717 no push subscription brings team-a's builds" in out

    code, out = run_doctor(deployment, function, *with_subscriptions(deployment, subscription, PUSHED))
    assert code == 0, out
    assert f"\u2713 team-a's builds are pushed to the function ({PUSHED['name']})" in out


# --- what the function reads together: its settings, its one credential source ----------------------------------


def wrong_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("\u2717")]


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (
            {"BUILD_PROJECTS": "acme-ci team-a", "TEST_REPORT_BUCKETS": "acme-test-reports"},
            "TEST_REPORT_BUCKETS must name each bucket's project (PROJECT=bucket) when BUILD_PROJECTS lists several",
        ),
        (
            {"BUILD_PROJECTS": "acme-ci", "TEST_REPORT_BUCKETS": "team-c=acme-c-reports"},
            "TEST_REPORT_BUCKETS names project 'team-c', which is not in BUILD_PROJECTS",
        ),
    ],
    ids=["a bucket of no project in a hub", "a bucket of a project not served"],
)
def test_settings_the_function_refuses_only_together_are_one_failed_check_naming_both(deployment, bitbucket,
                                                                                       settings, said):  # fmt: skip
    """Each is taken alone, but the function reads them together: every event would fail."""
    function = hub(bitbucket, "ALLOW_INTERNAL_ONLY")
    function["serviceConfig"]["environmentVariables"].update(settings)
    code, out = run_doctor(deployment, function, *with_subscriptions(deployment, PUSHED))
    assert code == 1, out
    [wrong] = wrong_lines(out)
    assert wrong.startswith(
        "\u2717 the function refuses its setting TEST_REPORT_BUCKETS together with BUILD_PROJECTS, so every event "
        f"fails: {said}"
    )
    assert "    \u2192 deploy it again: make deploy PROJECT=acme-ci REGION=... TEST_REPORT_BUCKETS=..." in out
    assert "\u2713 acme/webapp: credential entry 1 reads it" in out  # the other checks go on, BUILD_PROJECTS kept
    assert ("\u2713 team-a's builds are pushed" in out) == (settings["BUILD_PROJECTS"] == HUB["BUILD_PROJECTS"])


SECRET_VARIABLE = {"key": "BITBUCKET_CREDENTIALS", "projectId": "acme-ci", "secret": SECRET.rsplit("/", 1)[-1],
                   "version": "latest"}  # fmt: skip


@pytest.mark.parametrize(
    ("where", "also", "found"),
    [
        ("environmentVariables", {"CREDENTIALS_SECRET": SECRET}, "BITBUCKET_CREDENTIALS_FILE, CREDENTIALS_SECRET"),
        ("secretEnvironmentVariables", [SECRET_VARIABLE], "BITBUCKET_CREDENTIALS_FILE, BITBUCKET_CREDENTIALS"),
    ],
    ids=["a secret's name", "a secret set as a variable"],
)
def test_a_second_credential_source_beside_the_mounted_file_is_a_failed_check(deployment, bitbucket, where, also,
                                                                               found):  # fmt: skip
    """The function refuses two credential sources on every event, though doctor could read either of them."""
    function = described(bitbucket)
    service = function["serviceConfig"]
    service[where] = {**service[where], **also} if isinstance(also, dict) else also
    code, out = run_doctor(deployment, function)
    assert code == 1, out
    assert wrong_lines(out) == [
        "\u2717 the function refuses its credential source, so every event fails: configure exactly one credential "
        f"source, found {found}"
    ]
    assert "    \u2192 deploy it again, which configures one source: make deploy PROJECT=acme-ci REGION=..." in out
    assert "\u2713 no ERROR line of the function since" in out  # the checks that need no credentials go on
    assert "All checks hold." not in out


def test_a_credentials_file_no_secret_mounts_is_a_failed_check(deployment, bitbucket):
    function = described(bitbucket)
    function["serviceConfig"]["secretVolumes"] = []
    code, out = run_doctor(deployment, function)
    assert code == 1, out
    assert wrong_lines(out) == [
        "\u2717 the function cannot read its credentials, so every event fails: the deployment reads "
        "BITBUCKET_CREDENTIALS_FILE=/etc/secrets/bitbucket.json, which no secret mounts"
    ]
    assert "\u2713 no ERROR line of the function since" in out


def test_credentials_in_a_secret_set_as_a_variable_hold_every_check(deployment, bitbucket):
    function = described(bitbucket)
    service = function["serviceConfig"]
    del service["environmentVariables"]["BITBUCKET_CREDENTIALS_FILE"], service["secretVolumes"]
    service["secretEnvironmentVariables"] = [SECRET_VARIABLE]
    code, out = run_doctor(deployment, function)
    assert code == 0, out
    assert "\u2713 the credentials are readable: 2 entries" in out
    assert "\u2713 acme/api: credential entry 2 reads it" in out


# --- the Jira entries: a token, the site, the permissions; nothing written to Jira --------------------------------

BRANCH = "feature/ABC-123-login"
ENTRIES = [{"token": TOKEN, "repositories": ["acme/webapp"]}, {"token": API_TOKEN, "repositories": ["acme/api"]}]
OTHER_JIRA_SECRET = "ATOA-d0vtQ9x3MXbKZr7WqJH2u5nNeLcPyF8g"  # credentials Atlassian never issued


def store_jira(google: Any, site: Any, **fields: Any) -> None:
    """The deployment's credentials, the Jira site `acme` their entry 3 (with `fields`)."""
    entries = [*ENTRIES, site.entry(**fields)]
    remember_stored(entries)
    google.app.add_secret_version(SECRET, json.dumps(entries).encode())


def jira_lines(out: str) -> list[str]:
    return [line for line in out.split("\nJira: ", 1)[-1].split("\n\n")[0].splitlines()[1:] if line[:1] != " "]


def test_each_jira_entry_holds_its_token_site_and_permission_checks_and_doctor_writes_nothing_to_jira(
    deployment, bitbucket, google, jira
):
    """Its status disagreeing with Cloud Build, a build naming ABC-123 goes through doctor's dry run: Jira is told
    nothing of it, and its commit's message is not read."""
    created = ago(20)
    deliver(build("WORKING", "w-2", repo="acme/webapp", commit="2" * 40, branch=BRANCH, createTime=created))
    google.app.record(build("FAILURE", "w-2", repo="acme/webapp", commit="2" * 40, branch=BRANCH, createTime=created))
    store_jira(google, jira)
    reads = len(bitbucket.app.commit_calls())

    code, out = run_doctor(deployment, described(bitbucket))

    assert code == 1, out  # the status that disagrees
    assert "acme/webapp@222222222222 (webapp-pr): INPROGRESS \u2192 FAILED (build w-2)" in out
    assert jira_lines(out) == [
        f"\u2713 Jira entry 3 ({jira.url}): Atlassian gives its OAuth credentials a token",
        f"\u2713 Jira entry 3 ({jira.url}): its site's cloud id is {jira.cloud_id}",
        f"\u2713 Jira entry 3 ({jira.url}): Jira takes builds and deployments from its OAuth credentials",
    ]
    assert [c.method for c in jira.app.calls if not c.path.endswith("/oauth/token")] == ["GET"] * 3  # site, 2 reads
    assert jira.app.build_calls() == jira.app.deployment_calls() == []
    assert (jira.app.builds, jira.app.deployments) == ({}, {})
    assert len(bitbucket.app.commit_calls()) == reads
    tokens = {a.partition(" ")[2] for a in jira.app.authorizations if a}
    assert [s for s in (JIRA_CLIENT_SECRET, *tokens) if s in out] == []


def test_jira_credentials_atlassian_refuses_are_to_be_created_anew(deployment, bitbucket, google, jira):
    store_jira(google, jira, client_secret=OTHER_JIRA_SECRET)

    code, out = run_doctor(deployment, described(bitbucket))

    assert code == 1, out
    assert jira_lines(out) == [
        f"\u2717 Jira entry 3 ({jira.url}): Atlassian refuses its client id and secret",
        f"\u2713 Jira entry 3 ({jira.url}): its site's cloud id is {jira.cloud_id}",
    ]
    assert (
        "    \u2192 create new OAuth credentials in Jira settings \u2192 Apps \u2192 OAuth credentials, put their "
        "client id and secret in the entry, then make credentials PROJECT=acme-ci < credentials.json"
    ) in out
    assert OTHER_JIRA_SECRET not in out


@pytest.mark.parametrize(
    ("fields", "said", "fix"),
    [
        (
            {"jira": "SITE/../initech"},
            "the site's cloud id cannot be found (the site gives no cloud id)",
            'check the site\'s URL in "jira" (https://<your-site>.atlassian.net), or set "cloud_id" in the entry',
        ),
        (
            {"cloud_id": "0f3c2b1a-7d6e-4f5a-9b8c-1d2e3f4a5b6c"},
            'its "cloud_id" 0f3c2b1a-7d6e-4f5a-9b8c-1d2e3f4a5b6c is not its site\'s (CLOUD_ID, the site says)',
            'set "cloud_id" to CLOUD_ID, or remove it',
        ),
    ],
    ids=["a site that is not there", "a cloud id of another site"],
)
def test_a_jira_site_whose_cloud_id_cannot_be_found_or_differs_names_the_fix(deployment, bitbucket, google, jira,
                                                                               fields, said, fix):  # fmt: skip
    site = fields.get("jira", jira.url).replace("SITE/..", jira.server.root)
    store_jira(google, jira, **{**fields, "jira": site})

    code, out = run_doctor(deployment, described(bitbucket))

    assert code == 1, out
    assert f"\u2717 Jira entry 3 ({site}): {said.replace('CLOUD_ID', jira.cloud_id)}" in out
    assert f"    \u2192 {fix.replace('CLOUD_ID', jira.cloud_id)}" in out
    assert "takes builds" not in out  # not asked of Jira without the site's cloud id


def test_a_cloud_id_the_entry_gives_stands_where_the_site_cannot_be_asked(deployment, bitbucket, google, jira):
    """The function never asks the site when the entry names its cloud id: nor does doctor insist."""
    store_jira(google, jira, jira=f"{jira.server.root}/initech", cloud_id=jira.cloud_id)
    code, out = run_doctor(deployment, described(bitbucket))
    assert code == 0, out
    assert f"its site's cloud id is the entry's \"cloud_id\" {jira.cloud_id}" in out
    assert "Jira takes builds and deployments from its OAuth credentials" in out


def test_jira_credentials_without_the_builds_permission_are_told_to_get_it(deployment, bitbucket, google, jira):
    jira.app.accept_client(jira.client_id, jira.client_secret, permissions=("deployments",))
    store_jira(google, jira)

    code, out = run_doctor(deployment, described(bitbucket))

    assert code == 1, out
    assert (
        f"\u2717 Jira entry 3 ({jira.url}): its OAuth credentials may not send builds (Jira answered 403)\n"
        "    \u2192 give them the permission Builds in Jira settings \u2192 Apps \u2192 OAuth credentials"
    ) in out
    assert jira.app.build_calls() == []


@pytest.mark.parametrize("deploys", [False, True], ids=["no build deploys", "a build deploys"])
def test_credentials_without_the_deployments_permission_fail_only_where_a_build_deploys(
    deployment, bitbucket, google, jira, deploys
):
    jira.app.accept_client(jira.client_id, jira.client_secret, permissions=("builds",))
    store_jira(google, jira)
    if deploys:
        subs = {"_DEPLOY_ENVIRONMENT": "production"}
        google.app.record(build("SUCCESS", "w-3", repo="acme/webapp", commit="3" * 40, createTime=ago(10),
                                substitutions=subs))  # fmt: skip
        deliver(build("SUCCESS", "w-3", repo="acme/webapp", commit="3" * 40, createTime=ago(10), substitutions=subs))

    code, out = run_doctor(deployment, described(bitbucket))

    [said] = jira_lines(out)[2:]
    if deploys:
        assert code == 1, out
        assert said.startswith(f"\u2717 Jira entry 3 ({jira.url}): its OAuth credentials may send builds, not "
                               "deployments, and 1 build it is told of deploys since ")  # fmt: skip
        assert "    \u2192 give them the permission Deployments in Jira settings" in out
    else:
        assert code == 0, out
        assert said.startswith(f"\u2713 Jira entry 3 ({jira.url}): Jira takes builds from its OAuth credentials "
                               "(not deployments, which no build it is told of since ")  # fmt: skip


@pytest.mark.parametrize(
    ("to", "said"),
    [
        ("token", "Atlassian gave no token (Jira answered 503 to a token of Jira entry 3 (SITE))"),
        ("builds", "Jira answered 503 to reading a build"),
    ],
)
def test_atlassian_not_answering_is_a_failed_check_to_run_again(deployment, bitbucket, google, jira, to, said):
    jira.app.answer_next(*[503] * (relay.transport.HTTP_RETRIES + 1), to=to)
    store_jira(google, jira)

    code, out = run_doctor(deployment, described(bitbucket))

    assert code == 1, out
    assert (
        f"\u2717 Jira entry 3 ({jira.url}): {said.replace('SITE', jira.url)}\n"
        "    \u2192 run make doctor again; if it stays, see Atlassian's status (https://status.atlassian.com)"
    ) in out
