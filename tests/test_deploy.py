"""The deployment script, checked offline against the real Google Cloud CLI.

Every command the dry run prints is run by the installed `gcloud` with an empty
configuration: a command that parses stops for want of an account; one that
does not parse stops earlier with a usage error. Nothing reaches the network.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SA = "serviceAccount:bitbucket-build-status@x.iam.gserviceaccount.com"
NO_ACCOUNT = "You do not currently have an active account selected"
USAGE_ERRORS = ("unrecognized arguments", "Invalid choice", "argument", "expected one argument", "Invalid value")

needs_gcloud = pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")


def dry_run(target: str, source: str) -> list[list[str]]:
    """The commands `make TARGET DRY_RUN=1` prints, each pipeline split into its commands."""
    out = subprocess.run(
        ["make", "--no-print-directory", target, "DRY_RUN=1", "PROJECT=x", "REGION=europe-west1", f"SOURCE={source}"],
        cwd=ROOT, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    lines = [line for line in out.splitlines() if line.startswith("gcloud ")]
    return [shlex.split(part) for line in lines for part in line.split(" | ")]


def gcloud_verdict(command: list[str], config_dir: Path) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(config_dir),
        "CLOUDSDK_CONFIG": str(config_dir / command[1]),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120, check=False
    )
    return result.stderr + result.stdout


@pytest.fixture(scope="module")
def commands() -> dict[str, list[list[str]]]:
    return {source: dry_run("deploy", source) + dry_run("credentials", source) for source in ("secret", "bucket")}


@needs_gcloud
def test_every_printed_command_parses_with_the_installed_gcloud(commands, tmp_path):
    unique = {tuple(c) for cs in commands.values() for c in cs}
    control = ("gcloud", "pubsub", "topics", "create", "cloud-builds", "--no-such-flag")
    with ThreadPoolExecutor(4) as pool:
        verdicts = dict(zip(unique, pool.map(lambda c: gcloud_verdict(list(c), tmp_path), unique), strict=True))
        control_verdict = gcloud_verdict(list(control), tmp_path)
    assert "unrecognized arguments" in control_verdict  # the check can tell a bad command
    for command, verdict in verdicts.items():
        assert NO_ACCOUNT in verdict, f"{shlex.join(command)}\n{verdict}"
        assert not any(error in verdict.split(NO_ACCOUNT)[0] for error in USAGE_ERRORS), verdict


def grants(commands: list[list[str]]) -> list[tuple[str, ...]]:
    """(group, resource, member, role, condition) of every IAM grant the commands make."""
    found = []
    for command in commands:
        verb = next((i for i, arg in enumerate(command) if arg.endswith("-policy-binding")), None)
        if verb is not None:
            flags = dict(arg.split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)
            role, condition = flags.get("--role", "invoker"), flags.get("--condition", "")
            found.append((command[1], command[verb + 1], flags["--member"], role, condition))
    return found


def test_secret_source_grants_only_access_to_its_one_secret(commands):
    assert grants(commands["secret"]) == [
        ("secrets", "bitbucket-build-status-credentials", SA, "roles/secretmanager.secretAccessor", ""),
        ("functions", "bitbucket-build-status", SA, "invoker", ""),
    ]


def test_bucket_source_grants_only_reading_its_one_object_and_decrypting_with_its_one_key(commands):
    obj = "projects/_/buckets/x-bitbucket-build-status/objects/bitbucket-credentials.json.enc"
    assert grants(commands["bucket"]) == [
        ("storage", "gs://x-bitbucket-build-status", SA, "roles/storage.objectViewer",
         f'expression=resource.name == "{obj}",title=bitbucket-credentials-object-only'),
        ("kms", "credentials", SA, "roles/cloudkms.cryptoKeyDecrypter", ""),
        ("functions", "bitbucket-build-status", SA, "invoker", ""),
    ]  # fmt: skip
    key_grant = next(c for c in commands["bucket"] if c[1:4] == ["kms", "keys", "add-iam-policy-binding"])
    assert {"--keyring=bitbucket-build-status", "--location=global"} <= set(key_grant)


@pytest.mark.parametrize("source", ["secret", "bucket"])
def test_the_function_is_deployed_as_2nd_gen_python313_on_cloud_builds_with_retry(commands, source):
    [deploy] = [c for c in commands[source] if c[1:3] == ["functions", "deploy"]]
    for flag in (
        "--gen2", "--runtime=python313", "--entry-point=build_status_cloudevent", "--trigger-topic=cloud-builds",
        "--retry", "--service-account=bitbucket-build-status@x.iam.gserviceaccount.com",
        "--max-instances=1", "--concurrency=80",
    ):  # fmt: skip
        assert flag in deploy
    env = next(arg for arg in deploy if arg.startswith("--set-env-vars="))
    if source == "bucket":
        assert (
            "KMS_CRYPTO_KEY_ID=projects/x/locations/global/keyRings/bitbucket-build-status/cryptoKeys/credentials"
            in env
        )
    else:
        assert env == "--set-env-vars=CREDENTIALS_SECRET=projects/x/secrets/bitbucket-build-status-credentials"


def test_nothing_uses_gsutil_or_grants_on_the_whole_project(commands):
    for command in (c for cs in commands.values() for c in cs):
        assert command[0] == "gcloud"
        assert command[1:3] != ["projects", "add-iam-policy-binding"]
    assert "gsutil" not in (ROOT / "deploy" / "deploy.sh").read_text()


def test_the_bucket_is_private_with_uniform_access(commands):
    [create] = [c for c in commands["bucket"] if c[1:4] == ["storage", "buckets", "create"]]
    assert "--uniform-bucket-level-access" in create
    assert "--public-access-prevention" in create


def test_credentials_that_are_not_json_are_refused_before_anything_runs():
    result = subprocess.run(
        ["deploy/deploy.sh", "credentials"], cwd=ROOT, input="my-password-on-its-own", capture_output=True, text=True,
        env={**os.environ, "PROJECT": "x", "PATH": "/nonexistent:" + os.environ["PATH"]}, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "nothing was stored" in result.stderr
    assert "my-password-on-its-own" not in result.stdout + result.stderr
