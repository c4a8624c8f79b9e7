"""The deployment script, checked offline against the real Google Cloud CLI.

Every command the dry run prints is run by the installed `gcloud` with an empty
configuration: a command that parses stops for want of an account; one that
does not parse stops earlier with a usage error. Nothing reaches the network.
The files `gcloud` would upload, and only those, serve a build.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from standins.builds import COMMIT, build, now, push_body
from standins.processes import FunctionServer
from tests.conftest import TOKEN, shown

ROOT = Path(__file__).resolve().parents[1]
SA = "serviceAccount:bitbucket-build-status@x.iam.gserviceaccount.com"
NO_ACCOUNT = "You do not currently have an active account selected"
USAGE_ERRORS = ("unrecognized arguments", "Invalid choice", "argument", "expected one argument", "Invalid value")

SOURCES = ("file", "secret", "bucket")
BUILD_SA = "serviceAccount:bitbucket-build-status-build@x.iam.gserviceaccount.com"
PUBSUB_AGENT = "serviceAccount:service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
PASTED = "pasted-8cgNv1u9tHiyvVidIkoK1w4w"  # followed by a character outside ASCII
PASSWORD_ALONE = "my-password-1FK1Bm43yg6Ktsf23H0qdQa6"  # not a JSON document
ACCESS_TOKEN = "repository-access-token-3uWG9Gh3dwpn-JClw6BubpQQ"
ENTRY_ONE = "repo-token-one-WkML-3LxA_DAqhwkfk4f4efm"
ENTRY_TWO = "repo-token-two-itUYKTWdrsabEkJObR-m6Wo9"
MISSPELT = "misspelt-entry-token-Mst0fSJU2hHKVu3lKZZiCfBA"


@pytest.fixture(scope="module")
def gcloud() -> str:
    found = shutil.which("gcloud")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("gcloud is not installed: CI must check the deployment commands with the Google Cloud CLI")
        pytest.skip("gcloud is not installed")
    return found


def dry_run(target: str, source: str, *options: str) -> list[list[str]]:
    """The commands `make TARGET DRY_RUN=1` prints, each pipeline split into its commands."""
    out = subprocess.run(
        ["make", "--no-print-directory", target, "DRY_RUN=1", "PROJECT=x", "REGION=europe-west1", f"SOURCE={source}",
         *options],
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
    found = {source: dry_run("deploy", source) + dry_run("credentials", source) for source in SOURCES}
    found["connector"] = dry_run("deploy", "file", "CONNECTIONS=bb-dc bb-cloud", "VPC_CONNECTOR=corp-connector")
    found["direct"] = dry_run("deploy", "file", "NETWORK=corp", "SUBNET=corp-europe-west1")
    found["projects"] = dry_run("deploy", "file", "BUILD_PROJECTS=team-a team-b")
    found["reports"] = dry_run("deploy", "file", "TEST_REPORT_BUCKETS=acme-reports acme-artifacts")
    found["team reports"] = dry_run("deploy", "file", "BUILD_PROJECTS=team-a team-b",
                                    "TEST_REPORT_BUCKETS=team-a=acme-a-reports team-b=acme-b-reports,"
                                    "team-a=acme-shared team-b=acme-shared")  # fmt: skip
    found["alerts"] = dry_run("deploy", "file", "ALERT_EMAIL=ops@example.com")
    return found


def test_every_printed_command_parses_with_the_installed_gcloud(gcloud, commands, tmp_path):
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


BUILD_GRANTS = [
    ("projects", "x", BUILD_SA, role, "None")
    for role in ("roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectAdmin")
]
TOKEN_CREATOR = [("iam", SA.removeprefix("serviceAccount:"), PUBSUB_AGENT, "roles/iam.serviceAccountTokenCreator", "")]
BUILDS_VIEWER = [
    ("projects", "x", SA, "roles/cloudbuild.builds.viewer", "None"),  # which of two builds is newer
    ("logging", "bitbucket-build-status-builds", SA, "roles/logging.viewAccessor", ""),  # a failed step's lines
]


@pytest.mark.parametrize("source", ["file", "secret"])
def test_secret_sources_grant_only_access_to_their_one_secret(commands, source):
    assert grants(commands[source]) == [
        *BUILD_GRANTS,
        *TOKEN_CREATOR,
        *BUILDS_VIEWER,
        ("secrets", "bitbucket-build-status-credentials", SA, "roles/secretmanager.secretAccessor", ""),
        ("functions", "bitbucket-build-status", SA, "invoker", ""),
    ]


def test_bucket_source_grants_only_reading_its_one_object_and_decrypting_with_its_one_key(commands):
    obj = "projects/_/buckets/x-bitbucket-build-status/objects/bitbucket-credentials.json.enc"
    assert grants(commands["bucket"]) == [
        *BUILD_GRANTS,
        *TOKEN_CREATOR,
        *BUILDS_VIEWER,
        ("storage", "gs://x-bitbucket-build-status", SA, "roles/storage.objectViewer",
         f'expression=resource.name == "{obj}",title=bitbucket-credentials-object-only'),
        ("kms", "credentials", SA, "roles/cloudkms.cryptoKeyDecrypter", ""),
        ("functions", "bitbucket-build-status", SA, "invoker", ""),
    ]  # fmt: skip
    key_grant = next(c for c in commands["bucket"] if c[1:4] == ["kms", "keys", "add-iam-policy-binding"])
    assert {"--keyring=bitbucket-build-status", "--location=global"} <= set(key_grant)


@pytest.mark.parametrize("source", SOURCES)
def test_the_function_is_deployed_as_2nd_gen_python313_on_cloud_builds_with_retry(commands, source):
    [deploy] = [c for c in commands[source] if c[1:3] == ["functions", "deploy"]]
    for flag in (
        "--gen2", "--runtime=python313", "--entry-point=build_status_cloudevent", "--trigger-topic=cloud-builds",
        "--retry", "--service-account=bitbucket-build-status@x.iam.gserviceaccount.com",
        "--max-instances=1", "--concurrency=80", "--timeout=150s",
        "--build-service-account=projects/x/serviceAccounts/bitbucket-build-status-build@x.iam.gserviceaccount.com",
    ):  # fmt: skip
        assert flag in deploy
    env = next(arg for arg in deploy if arg.startswith("--set-env-vars="))
    if source == "bucket":
        assert (
            "KMS_CRYPTO_KEY_ID=projects/x/locations/global/keyRings/bitbucket-build-status/cryptoKeys/credentials"
            in env
        )
    elif source == "secret":
        assert (
            env == "--set-env-vars=THREADS=80,LOG_VIEW=bitbucket-build-status-builds,"
            "CREDENTIALS_SECRET=projects/x/secrets/bitbucket-build-status-credentials"
        )
    else:
        assert env == (
            "--set-env-vars=THREADS=80,LOG_VIEW=bitbucket-build-status-builds,"
            "BITBUCKET_CREDENTIALS_FILE=/etc/secrets/bitbucket-credentials.json"
        )
        assert (
            "--set-secrets=/etc/secrets/bitbucket-credentials.json=bitbucket-build-status-credentials:latest" in deploy
        )


def test_the_default_deployment_mounts_the_secret_as_a_file(commands):
    out = subprocess.run(
        ["make", "--no-print-directory", "deploy", "DRY_RUN=1", "PROJECT=x", "REGION=europe-west1"],
        cwd=ROOT, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    assert [shlex.split(line) for line in out.splitlines() if line.startswith("gcloud ")] == dry_run("deploy", "file")


def test_the_timeout_leaves_room_beyond_the_functions_own_deadline(commands):
    import relay.config

    [deploy] = [c for c in commands["file"] if c[1:3] == ["functions", "deploy"]]
    timeout = next(arg for arg in deploy if arg.startswith("--timeout=")).removeprefix("--timeout=")
    assert timeout.endswith("s")
    assert float(timeout[:-1]) >= relay.config.DEFAULT_EVENT_DEADLINE_SECONDS + 15


def test_the_functions_account_gets_only_cloud_build_viewer_in_each_served_project_and_nothing_uses_gsutil(commands):
    """roles/cloudbuild.builds.viewer: the smallest role holding cloudbuild.builds.get, which says which of two
    builds of one status is newer, in the hub and in every project of BUILD_PROJECTS (a team's builds are asked
    of its own project); every other project role goes to the build account."""
    for source, listed in commands.items():
        granted = []
        for command in listed:
            assert command[0] == "gcloud"
            if command[1:3] == ["projects", "add-iam-policy-binding"] and f"--member={BUILD_SA}" not in command:
                assert command[4:] == [f"--member={SA}", "--role=roles/cloudbuild.builds.viewer",
                                       "--condition=None"], command  # fmt: skip
                granted.append(command[3])
        assert granted == (["x", "team-a", "team-b"] if source in ("projects", "team reports") else ["x"]), source
    assert "gsutil" not in (ROOT / "deploy" / "deploy.sh").read_text()


def test_the_bucket_is_private_with_uniform_access(commands):
    [create] = [c for c in commands["bucket"] if c[1:4] == ["storage", "buckets", "create"]]
    assert "--uniform-bucket-level-access" in create
    assert "--public-access-prevention" in create


# --- the script itself, run against a stand-in gcloud -----------------------------

FAKE_GCLOUD = """#!/usr/bin/env bash
# A stand-in for gcloud: records each call; `describe` and `list` answer as $FAKE_EXISTING says.
printf '%s\\n' "$*" >> "$FAKE_GCLOUD_LOG"
case " $* " in
  *" projects describe "*) echo 123456789012 ;;
  *" list "*) [ "$FAKE_EXISTING" != all ] || echo projects/x/existing/1 ;;
  *" versions describe "*) [ "$FAKE_VERSION" = yes ] || exit 1 ;;
  *" describe "*) [ "$FAKE_EXISTING" = all ] || exit 1 ;;
  *" secrets versions add "*|*" storage cp "*) cat > /dev/null ;;
  *" kms encrypt "*) cat ;;
esac
"""


def run_script(
    tmp_path: Path,
    *args: str,
    existing: str = "none",
    source: str = "file",
    stdin: str = "",
    version: str = "yes",
    extra: dict[str, str] | None = None,
) -> list[str]:
    """Run deploy/deploy.sh for real against the stand-in gcloud; the gcloud commands it ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / f"gcloud-{existing}.log"
    env = {
        **os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_GCLOUD_LOG": str(log),
        "FAKE_EXISTING": existing, "FAKE_VERSION": version, "PROJECT": "x", "REGION": "europe-west1",
        "SOURCE": source, "DRY_RUN": "", **(extra or {}),
    }  # fmt: skip
    result = subprocess.run(
        ["deploy/deploy.sh", *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("source", SOURCES)
def test_a_new_project_gets_every_resource_created(tmp_path, source):
    ran = run_script(tmp_path, "deploy", existing="none", source=source)
    created = [line.split(" --")[0] for line in ran if " create " in line]
    expected = ["pubsub topics create cloud-builds", "iam service-accounts create bitbucket-build-status",
                "iam service-accounts create bitbucket-build-status-build",
                "logging views create bitbucket-build-status-builds"]  # fmt: skip
    if source != "bucket":
        expected.append("secrets create bitbucket-build-status-credentials")
    else:
        expected += ["kms keyrings create bitbucket-build-status", "kms keys create credentials",
                     "storage buckets create gs://x-bitbucket-build-status"]  # fmt: skip
    alerts = ["logging metrics create bitbucket-build-status-errors",
              "logging metrics create bitbucket-build-status-retries",
              "alpha monitoring policies create", "alpha monitoring policies create"]  # fmt: skip
    assert created == expected + alerts
    assert any(line.startswith("functions deploy bitbucket-build-status ") for line in ran)
    assert any("service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com" in line for line in ran)


@pytest.mark.parametrize("source", SOURCES)
def test_running_it_again_creates_nothing_and_grants_and_deploys_again(tmp_path, source):
    first = run_script(tmp_path, "deploy", existing="none", source=source)
    again = run_script(tmp_path, "deploy", existing="all", source=source)
    assert [line for line in again if " create " in line] == []
    redone = [line for line in first if " create " not in line and " describe " not in line]
    assert [line for line in again if " describe " not in line] == redone  # grants and deploy are idempotent


@pytest.mark.parametrize(
    "stored",
    ['{"token": 5}', '{"username": "a:b", "password": "p"}', f'{{"token": "{PASTED}…"}}', PASSWORD_ALONE],
)
def test_credentials_the_function_would_refuse_are_refused_before_anything_runs(tmp_path, stored):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text("#!/bin/sh\necho called >> " + str(tmp_path / "called") + "\n")
    (bin_dir / "gcloud").chmod(0o755)
    result = subprocess.run(
        ["deploy/deploy.sh", "credentials"], cwd=ROOT, input=stored, capture_output=True, text=True,
        env={**os.environ, "PROJECT": "x", "DRY_RUN": "", "PATH": f"{bin_dir}:{os.environ['PATH']}"}, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "nothing was stored" in result.stderr
    assert result.stderr.startswith("standard input ")  # the function's own words, naming where, not what
    for part in ("a:b", PASTED, PASSWORD_ALONE):
        assert part not in result.stdout + result.stderr
    assert not (tmp_path / "called").exists()


@pytest.mark.parametrize("existing", ["none", "all"])
def test_credentials_the_function_accepts_are_stored_in_a_secret_created_when_missing(tmp_path, existing):
    ran = run_script(tmp_path, "credentials", existing=existing, stdin=f'{{"token": "{ACCESS_TOKEN}"}}')
    assert [line.split(" --")[0] for line in ran if " describe " not in line] == [
        "services enable secretmanager.googleapis.com",
        *(["secrets create bitbucket-build-status-credentials"] if existing == "none" else []),
        "secrets versions add bitbucket-build-status-credentials",
    ]


def test_the_file_source_asks_for_the_credentials_before_it_deploys(tmp_path):
    with pytest.raises(AssertionError, match="store the credentials first"):
        run_script(tmp_path, "deploy", version="no")
    ran = (tmp_path / "gcloud-none.log").read_text()
    assert "functions deploy" not in ran


@pytest.mark.parametrize("source", SOURCES)
def test_the_readme_by_hand_commands_are_exactly_what_the_script_runs(source):
    readme = (ROOT / "docs" / "deploying.md").read_text().splitlines()
    for target in ("deploy", "credentials"):
        out = subprocess.run(
            ["make", "-s", target, "DRY_RUN=1", "PROJECT=my-project", "REGION=europe-west1", f"SOURCE={source}"],
            cwd=ROOT, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            assert line in readme, line


def test_make_credentials_accepts_a_document_of_several_entries(tmp_path):
    document = f'[{{"token": "{ENTRY_ONE}", "repositories": ["acme/webapp"]}}, {{"token": "{ENTRY_TWO}"}}]'
    ran = run_script(tmp_path, "credentials", existing="all", stdin=document)
    assert ran[-1] == "secrets versions add bitbucket-build-status-credentials --data-file=- --project=x"


def test_make_credentials_refuses_a_document_with_a_misspelt_field(tmp_path):
    result = subprocess.run(
        ["deploy/deploy.sh", "credentials"], cwd=ROOT, input=f'[{{"token": "{MISSPELT}", "repos": ["a/b"]}}]',
        capture_output=True, text=True, env={**os.environ, "PROJECT": "x", "DRY_RUN": ""}, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "entry 1 of standard input has an unknown field: 'repos'" in result.stderr
    assert MISSPELT not in result.stderr


def test_connections_get_the_viewer_role_only_when_named_and_only_on_themselves(commands):
    assert not [g for g in grants(commands["file"]) if g[0] == "builds"]
    assert [g for g in grants(commands["connector"]) if g[0] == "builds"] == [
        ("builds", name, SA, "roles/cloudbuild.connectionViewer", "") for name in ("bb-dc", "bb-cloud")
    ]


def test_a_private_server_is_reached_through_a_connector_or_direct_vpc_egress_on_private_ranges_only(commands):
    [deploy] = [c for c in commands["connector"] if c[1:3] == ["functions", "deploy"]]
    assert {"--vpc-connector=corp-connector", "--egress-settings=private-ranges-only"} <= set(deploy)
    [update] = [c for c in commands["direct"] if c[1:3] == ["run", "services"]]
    assert {"--network=corp", "--subnet=corp-europe-west1", "--vpc-egress=private-ranges-only"} <= set(update)


@pytest.mark.parametrize("source", SOURCES)
def test_the_functions_threads_are_its_concurrency(commands, source):
    """The Functions Framework serves THREADS events at once (4 per vCPU by default): fewer than
    --concurrency, and the rest wait in gunicorn's queue."""
    [deploy] = [c for c in commands[source] if c[1:3] == ["functions", "deploy"]]
    concurrency = next(arg for arg in deploy if arg.startswith("--concurrency=")).removeprefix("--concurrency=")
    variables = next(arg for arg in deploy if arg.startswith("--set-env-vars=")).removeprefix("--set-env-vars=")
    threads = dict(pair.split("=", 1) for pair in variables.split(",") if pair.startswith("THREADS="))
    assert threads == {"THREADS": concurrency}
    assert int(concurrency) > 1


def test_each_build_project_gets_its_topic_and_an_authenticated_push_subscription_in_the_hub(commands):
    ran = commands["projects"]
    for project in ("team-a", "team-b"):
        assert ["gcloud", "pubsub", "topics", "create", "cloud-builds", f"--project={project}"] in ran
        [subscription] = [c for c in ran if c[1:4] == ["pubsub", "subscriptions", "create"] and project in c[4]]
        assert subscription[4] == f"bitbucket-build-status-{project}"
        assert {
            f"--topic=projects/{project}/topics/cloud-builds",
            f"--push-endpoint=FUNCTION_URL/projects/{project}/topics/cloud-builds",  # the topic names the project
            f"--push-auth-service-account={SA.removeprefix('serviceAccount:')}",
            "--project=x",  # the subscription lives in the hub
        } <= set(subscription)
        ack = int(next(a for a in subscription if a.startswith("--ack-deadline=")).split("=")[1])
        assert ack > 150  # beyond the function's --timeout
        assert "--min-retry-delay=10s" in subscription
    [deploy] = [c for c in ran if c[1:3] == ["functions", "deploy"]]
    assert "--ingress-settings=internal-only" in deploy
    variables = next(arg for arg in deploy if arg.startswith("--set-env-vars="))
    assert "BUILD_PROJECTS=x team-a team-b" in variables.split(",")
    assert not [c for c in commands["file"] if c[1:3] == ["pubsub", "subscriptions"]]  # one project: none


def test_the_roles_each_build_project_needs_are_said_before_anything_runs():
    result = subprocess.run(
        ["make", "--no-print-directory", "deploy", "DRY_RUN=1", "PROJECT=x", "REGION=europe-west1",
         "BUILD_PROJECTS=team-a team-b"],
        cwd=ROOT, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.stderr.startswith("Whoever runs this needs, in each of team-a team-b, roles/pubsub.editor")


def test_running_it_again_updates_the_push_subscriptions(tmp_path):
    ran = run_script(tmp_path, "deploy", existing="all", extra={"BUILD_PROJECTS": "team-a"})
    assert any(line.startswith("pubsub subscriptions update bitbucket-build-status-team-a ") for line in ran)
    assert not any(line.startswith("pubsub topics create") for line in ran)


def test_each_served_project_gets_a_log_view_of_builds_only_that_the_function_alone_may_read(commands):
    """A failed step's lines are read through a log view of each project's _Default bucket limited to
    resource.type="build", with roles/logging.viewAccessor on that view only: no other log of the project."""
    listed = commands["projects"]
    views = [c for c in listed if c[1:4] == ["logging", "views", "create"]]
    grants = [c for c in listed if c[1:4] == ["logging", "views", "add-iam-policy-binding"]]
    assert [next(a for a in c if a.startswith("--project=")) for c in views] == [
        "--project=x", "--project=team-a", "--project=team-b"
    ]  # fmt: skip
    assert all('--log-filter=resource.type="build"' in c and "--bucket=_Default" in c for c in views)
    assert [(c[4], c[-2], c[-1]) for c in grants] == [
        ("bitbucket-build-status-builds", f"--member={SA}", "--role=roles/logging.viewAccessor")
    ] * 3
    [deploy] = [c for c in listed if c[1:3] == ["functions", "deploy"]]
    assert "LOG_VIEW=bitbucket-build-status-builds" in next(a for a in deploy if a.startswith("--set-env-vars="))


def test_test_report_buckets_get_object_read_for_the_function_and_nothing_more(commands):
    """A build's author names where its JUnit files are: the function may read only the deployment's buckets."""
    storage = [g for g in grants(commands["reports"]) if g[0] == "storage"]
    assert storage == [
        ("storage", f"gs://{bucket}", SA, "roles/storage.objectViewer", "")
        for bucket in ("acme-reports", "acme-artifacts")
    ]
    [deploy] = [c for c in commands["reports"] if c[1:3] == ["functions", "deploy"]]
    assert "TEST_REPORT_BUCKETS=acme-reports acme-artifacts" in next(
        a for a in deploy if a.startswith("--set-env-vars=")
    )


def test_each_projects_test_report_buckets_are_granted_once_each_and_given_to_the_function_as_named(commands):
    """PROJECT=bucket: a bucket only that project's builds may name; the function's account reads each bucket."""
    storage = [g for g in grants(commands["team reports"]) if g[0] == "storage"]
    assert storage == [
        ("storage", f"gs://{bucket}", SA, "roles/storage.objectViewer", "")
        for bucket in ("acme-a-reports", "acme-b-reports", "acme-shared")
    ]
    [deploy] = [c for c in commands["team reports"] if c[1:3] == ["functions", "deploy"]]
    variables = next(a for a in deploy if a.startswith("--set-env-vars=")).split(",")
    assert "TEST_REPORT_BUCKETS=team-a=acme-a-reports team-b=acme-b-reports team-a=acme-shared team-b=acme-shared" in (
        variables
    )


def test_a_bucket_without_its_project_in_a_deployment_of_several_projects_stops_it_before_anything_runs():
    """Any project's builds could name it, so one team's build could read another's test results: main.py's own
    rule refuses it here, before the function would refuse every event."""
    result = subprocess.run(
        ["make", "--no-print-directory", "deploy", "DRY_RUN=1", "PROJECT=x", "REGION=europe-west1",
         "BUILD_PROJECTS=team-a team-b", "TEST_REPORT_BUCKETS=acme-test-reports"],
        cwd=ROOT, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    assert "TEST_REPORT_BUCKETS must name each bucket's project (PROJECT=bucket)" in result.stderr
    assert "gcloud" not in result.stdout


def test_alerts_open_an_incident_on_any_error_and_on_retries_for_30_minutes_and_email_when_asked(commands):
    """Log-based metrics on the function's own lines, a policy on each; ALERT_EMAIL adds an email channel to both."""
    listed = commands["alerts"]
    metrics = {c[4]: next(a for a in c if a.startswith("--log-filter=")) for c in listed if c[1:4] == ["logging",
               "metrics", "create"]}  # fmt: skip
    assert set(metrics) == {"bitbucket-build-status-errors", "bitbucket-build-status-retries"}
    assert metrics["bitbucket-build-status-errors"].endswith("AND severity>=ERROR")
    assert metrics["bitbucket-build-status-retries"].endswith('AND jsonPayload.message=~"^Will retry"')
    [channel] = [c for c in listed if c[1:5] == ["beta", "monitoring", "channels", "create"]]
    assert "--channel-labels=email_address=ops@example.com" in channel
    policies = [c for c in listed if c[1:5] == ["alpha", "monitoring", "policies", "create"]]
    assert [next(a for a in c if a.startswith("--duration=")) for c in policies] == [
        "--duration=0s",
        "--duration=1800s",
    ]
    assert all("--notification-channels=NOTIFICATION_CHANNEL" in c and "--if=> 0" in c for c in policies)
    assert all("make doctor" in next(a for a in c if a.startswith("--documentation=")) for c in policies)
    assert not [c for c in commands["file"] if c[1:3] == ["beta", "monitoring"]]  # no channel unless asked
    off = dry_run("deploy", "file", "ALERTS=off")
    assert not [c for c in off if c[1:3] in (["logging", "metrics"], ["alpha", "monitoring"])]


# --- what `gcloud functions deploy --source .` uploads, and that it runs alone --------------------------------------

# What a developer's checkout holds beside the code, planted so that leaving it out is proved on every run.
LEFTOVERS = ("relay/__pycache__/event.cpython-313.pyc", "relay/.event.py.swp", "tests/__pycache__/conftest.pyc",
             ".venv/lib/python3.13/site-packages/relay/__init__.py", ".mypy_cache/3.13/relay/event.data.json",
             ".pytest_cache/v/cache/lastfailed")  # fmt: skip
NOT_DEPLOYED = ("tests", "standins", "resync", "doctor", "bench", "demo", "deploy", "docs", ".ci", ".venv",
                ".mypy_cache", ".pytest_cache")  # fmt: skip


def files_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def files_to_upload(folder: Path, config_dir: Path) -> set[str]:
    """What `gcloud functions deploy --source FOLDER` uploads, as the installed gcloud lists it; without gcloud (never
    under CI), the same rules read from .gcloudignore by pathspec (mypy's own dependency), which the test below
    holds to gcloud's reading of this .gcloudignore."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        if os.environ.get("CI"):
            pytest.fail(
                "gcloud is not installed: CI must list the files a deployment uploads with the Google Cloud CLI"
            )
        return files_kept_by_pathspec(folder)
    listed = subprocess.run(
        [gcloud, "meta", "list-files-for-upload", str(folder)], capture_output=True, text=True, check=True,
        env={"PATH": os.environ["PATH"], "HOME": str(config_dir), "CLOUDSDK_CONFIG": str(config_dir),
             "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        stdin=subprocess.DEVNULL, timeout=120,
    ).stdout  # fmt: skip
    return {line for line in listed.splitlines() if line}


def files_kept_by_pathspec(folder: Path) -> set[str]:
    pathspec = pytest.importorskip("pathspec", reason="neither gcloud nor pathspec (which mypy brings) is installed")
    rules = pathspec.GitIgnoreSpec.from_lines((folder / ".gcloudignore").read_text().splitlines())
    return {path for path in files_under(folder) if not rules.match_file(path)}


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as a developer deploys it: every file of the working tree, and the leftovers of their work."""
    folder = tmp_path_factory.mktemp("checkout") / "bitbucket-build-status"
    shutil.copytree(
        ROOT, folder, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".*_cache", ".hypothesis")
    )
    for leftover in LEFTOVERS:
        (folder / leftover).parent.mkdir(parents=True, exist_ok=True)
        (folder / leftover).write_bytes(b"\x00 not deployed")
    return folder


@pytest.fixture(scope="module")
def uploaded(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return files_to_upload(checkout, tmp_path_factory.mktemp("gcloud-config"))


def test_a_deployment_uploads_only_main_py_requirements_txt_and_the_packages_modules(checkout, uploaded):
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "relay").rglob("*.py")
               if "__pycache__" not in path.parts}  # fmt: skip
    assert uploaded == {"main.py", "requirements.txt", *modules}
    beside = {
        path
        for path in files_under(checkout)
        if path.split("/")[0] in NOT_DEPLOYED or "__pycache__" in path or path.endswith((".pyc", ".swp"))
    }
    assert {"tests/conftest.py", "standins/processes.py", "doctor/__main__.py", *LEFTOVERS} <= beside
    assert uploaded.isdisjoint(beside)


def test_without_gcloud_the_rules_of_gcloudignore_are_read_as_gcloud_reads_them(gcloud, checkout, uploaded):
    """gcloud's `*` matches the top level only, git's every level: the fallback must agree on this file."""
    assert files_kept_by_pathspec(checkout) == uploaded


def test_the_uploaded_files_alone_serve_a_failed_build_to_bitbucket(checkout, uploaded, bitbucket, google, tmp_path):
    """Copied alone into an empty folder, as Cloud Functions unpacks the upload, the files serve a build through
    functions-framework: a module .gcloudignore left out is a ModuleNotFoundError at every cold start. A failed
    step takes the longest path (Cloud Logging, the matchers, annotations, the report)."""
    deployed = tmp_path / "workspace"
    for path in uploaded:
        (deployed / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkout / path, deployed / path)
    credentials = tmp_path / "secrets" / "bitbucket-credentials.json"
    credentials.parent.mkdir()
    credentials.write_text(json.dumps({"token": TOKEN}))
    env = {"BITBUCKET_API_URL": bitbucket.api_url, "BITBUCKET_CREDENTIALS_FILE": str(credentials)}
    steps = [{"id": "typecheck", "name": "node:22", "args": ["npx", "tsc"], "dir": "web", "status": "FAILURE"}]
    tsc = (ROOT / "tests" / "data" / "logs" / "tsc.txt").read_text().splitlines()
    google.app.write_log("acme-ci", "b-0001", {'Step #0 - "typecheck"': tsc})
    function = FunctionServer("build_status_cloudevent", "cloudevent", env, tmp_path / "function.log", deployed)
    try:
        headers = {
            "ce-id": "upload-1",
            "ce-specversion": "1.0",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-source": "//pubsub.googleapis.com/projects/acme-ci/topics/cloud-builds",
            "ce-time": now(),
        }
        body = push_body(build("FAILURE", steps=steps))
        response = requests.post(function.url, json=body, headers=headers, timeout=60)
        assert response.status_code == 200, function.process.output()[-2000:]
    finally:
        function.stop()
    assert [(s["state"], s["description"]) for s in shown(bitbucket)] == [("FAILED", "Failed after 3m 12s")]
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert report["details"].endswith(tsc[-1])
    annotations = bitbucket.app.shown_annotations("acme", "webapp", COMMIT)
    assert [(a["path"], a["line"]) for a in annotations] == [("web/src/app.ts", 2), ("web/src/app.ts", 6)]
