"""`make doctor`: a deployment's health, each check with the one thing to do, through the stand-ins (the deployment's
description as gcloud prints it, Cloud Build's list, Secret Manager, Cloud Logging, both Bitbucket sites); it
writes nothing, and never prints a credential."""

from __future__ import annotations

import io
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import doctor
from standins.builds import build
from tests.conftest import DC_TOKEN, TOKEN, deliver, document, remember_stored

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
