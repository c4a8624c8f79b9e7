"""Synthetic Cloud Build messages, and the real samples, as the function receives them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent / "data" / "samples"
COMMIT = "65ca6a99a2573f0f1ff5dc93f78a77966248ea2d"
TRIGGER_ID = "2bceb582-3141-44bf-b444-5640cbcaecc5"


def sample(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((SAMPLES / "cloud-build" / f"{name}.json").read_text())
    return found


def build(
    status: str = "WORKING",
    build_id: str = "b-0001",
    *,
    repo: str = "acme/webapp",
    commit: str = COMMIT,
    branch: str | None = "feature/fish",
    trigger_id: str | None = TRIGGER_ID,
    trigger_name: str | None = "webapp-pr",
    source: str = "git",
    **extra: Any,
) -> dict[str, Any]:
    """A Build as Cloud Build publishes it, from one of the Bitbucket sources: git (a gitSource URL),
    connection (a connected repository), mirror (Cloud Source Repositories), webhook (substitutions)."""
    subs: dict[str, str] = {"PROJECT_ID": "acme-ci", "BUILD_ID": build_id}
    if trigger_name:
        subs["TRIGGER_NAME"] = trigger_name
    result: dict[str, Any] = {
        "id": build_id,
        "projectId": "acme-ci",
        "status": status,
        "createTime": "2026-11-27T09:00:00.000000000Z",
        "logUrl": f"https://console.cloud.google.com/cloud-build/builds;region=global/{build_id}?project=1234",
        "substitutions": subs,
    }
    if trigger_id:
        result["buildTriggerId"] = trigger_id
        result["tags"] = [f"trigger-{trigger_id}"]
    if status != "QUEUED" and status != "PENDING":
        result["startTime"] = "2026-11-27T09:00:05.250Z"
    if status not in ("QUEUED", "PENDING", "WORKING"):
        result["finishTime"] = "2026-11-27T09:03:17.300Z"
    if source == "connection":
        subs.update(REPO_FULL_NAME=repo, COMMIT_SHA=commit)
        result["source"] = {
            "connectedRepository": {
                "repository": connected_repository(repo),
                "revision": branch or commit,
            }
        }
    elif source == "git":
        subs["COMMIT_SHA"] = commit
        result["source"] = {"gitSource": {"url": f"https://bitbucket.org/{repo}.git", "revision": commit}}
    elif source == "mirror":
        mirror = "bitbucket_" + repo.replace("/", "_")
        result["source"] = {"repoSource": {"projectId": "acme-ci", "repoName": mirror}}
        if branch:
            result["source"]["repoSource"]["branchName"] = branch
        result["sourceProvenance"] = {
            "resolvedRepoSource": {"projectId": "acme-ci", "repoName": mirror, "commitSha": commit}
        }
        branch = None
    elif source == "webhook":
        subs.update(_BITBUCKET_REPO=repo, _BITBUCKET_COMMIT=commit)
        if branch:
            subs["_BITBUCKET_BRANCH"] = branch
        branch = None
    if branch:
        subs["BRANCH_NAME"] = branch
    result.update(extra)
    return result


def connected_repository(repo: str) -> str:
    """The Cloud Build resource name of a repository of the connection `bb`, as `gcloud builds repositories
    create` names it (the repository's name, not its path)."""
    return f"projects/acme-ci/locations/europe-west1/connections/bb/repositories/{repo.replace('/', '-')[-60:]}"


def encode(build_or_bytes: Any) -> str:
    raw = build_or_bytes if isinstance(build_or_bytes, bytes) else json.dumps(build_or_bytes).encode()
    return base64.b64encode(raw).decode()


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Context:
    """What the 1st gen runtime passes as `context`."""

    def __init__(self, timestamp: str | None = None, event_id: str = "1") -> None:
        self.timestamp = timestamp or now()
        self.event_id = event_id
        self.event_type = "google.pubsub.topic.publish"
        self.resource = {"service": "pubsub.googleapis.com", "name": "projects/acme-ci/topics/cloud-builds"}


def background_event(build_or_bytes: Any) -> dict[str, Any]:
    return {"data": encode(build_or_bytes), "attributes": {}}


def push_body(build_or_bytes: Any, message_id: str = "1", publish_time: str | None = None) -> dict[str, Any]:
    """What a Pub/Sub push subscription POSTs."""
    return {
        "message": {"data": encode(build_or_bytes), "messageId": message_id, "publishTime": publish_time or now()},
        "subscription": "projects/acme-ci/subscriptions/bitbucket-build-status",
    }


# Hostile values for a build's repository, commit, branch, trigger and key: path tricks, encodings, control
# and look-alike characters, lengths, shell and URL syntax.
HOSTILE = [
    "..", ".", "../admin", "..%2F..", "%2e%2e", "a/b", "a%2Fb", "a%252Fb", "a?x=1", "a#top", "a;b", "a&b=c",
    " acme", "acme ", "ac me", "acme\t", "acme\n", "acme\r\nX-Injected: 1", "acme\x00", "acme\x7f",
    "ａｃｍｅ", "аcme", "acme\u200b", "acme\u202e", "ACME…", "x" * 101, "x" * 10_000, "", "@acme", "acme:443",
    "//evil.example", "http://evil.example/", "\\\\evil", "~acme", "$(id)", "`id`", "acme/../..",
]  # fmt: skip
HOSTILE_FIELDS = ["workspace", "slug", "commit", "branch", "trigger", "key"]


def hostile_build(field: str, value: str) -> dict[str, Any]:
    """A webhook build with `value` in one field, the others plain."""
    names = {"workspace": "acme", "slug": "webapp", "commit": COMMIT, "branch": "main", field: value}
    b = build("SUCCESS", source="webhook", trigger_id=None)
    subs = b["substitutions"]
    if field == "trigger":
        subs["TRIGGER_NAME"] = value
    elif field == "key":
        subs["_BITBUCKET_KEY"] = value
    subs.update(
        _BITBUCKET_REPO=f"{names['workspace']}/{names['slug']}",
        _BITBUCKET_COMMIT=names["commit"],
        _BITBUCKET_BRANCH=names["branch"],
    )
    return b


def listed_build(n: int, created: str, status: str = "SUCCESS") -> dict[str, Any]:
    """A build as Cloud Build's listing returns it, of about 6 KB: six steps with their commands, timings and
    pulls, the trigger's substitutions, images, artifacts and timings; each of its own commit (so each is its own
    status: nothing is superseded, the most a resync must hold)."""
    timing = {"startTime": "2026-11-27T09:01:00.123456789Z", "endTime": "2026-11-27T09:02:00.123456789Z"}
    steps = [
        {"id": name, "name": image, "entrypoint": "bash",
         "args": ["-c", f"set -euo pipefail; cd {name}; ./scripts/{name}.sh --ci --verbose --report=out/{name}.xml"],
         "timing": timing, "pullTiming": timing, "status": "SUCCESS", "env": [f"STEP={name}", "CI=true"],
         "secretEnv": ["NPM_TOKEN"], "waitFor": ["-"]}
        for name, image in [("checkout", "gcr.io/cloud-builders/git"), ("lint", "python:3.12"),
                            ("unit-tests", "python:3.12"), ("build", "gcr.io/cloud-builders/docker"),
                            ("push", "gcr.io/cloud-builders/docker"),
                            ("deploy", "gcr.io/google.com/cloudsdktool/cloud-sdk")]
    ]  # fmt: skip
    b = build(status, f"{n:08x}-5b1e-4c2a-9d3f-{n:012x}", commit=f"{n + 1:040x}", branch="main", createTime=created,
              steps=steps)  # fmt: skip
    b["substitutions"].update(
        {"REPO_NAME": "webapp", "REPO_FULL_NAME": "acme/webapp", "REF_NAME": "main", "SHORT_SHA": f"{n + 1:07x}",
         "REVISION_ID": f"{n + 1:040x}", "TRIGGER_BUILD_CONFIG_PATH": "cloudbuild.yaml",
         "_DEPLOY_REGION": "europe-west1", "_SERVICE": "webapp", "LOCATION": "global", "PROJECT_NUMBER": "1234"}
    )  # fmt: skip
    image = f"europe-west1-docker.pkg.dev/acme-ci/webapp/webapp:{n + 1:07x}"
    b.update(
        name=f"projects/1234/locations/global/builds/{b['id']}",
        results={"images": [{"name": image, "digest": "sha256:" + "ab" * 32, "pushTiming": timing}],
                 "buildStepImages": ["sha256:" + "cd" * 32] * 6, "buildStepOutputs": [""] * 6},
        timeout="1200s", images=[image], artifacts={"images": [image]},
        logsBucket="gs://1234.cloudbuild-logs.googleusercontent.com",
        options={"machineType": "E2_HIGHCPU_8", "logging": "LEGACY", "dynamicSubstitutions": True},
        timing={"BUILD": timing, "FETCHSOURCE": timing, "PUSH": timing},
        queueTtl="3600s", serviceAccount="projects/acme-ci/serviceAccounts/builder@acme-ci.iam.gserviceaccount.com",
        availableSecrets={"secretManager": [{"versionName": "projects/acme-ci/secrets/npm-token/versions/latest",
                                             "env": "NPM_TOKEN"}]},
        warnings=[{"text": "The build's service account lacks roles/logging.logWriter", "priority": "WARNING"},
                  {"text": "Image pulls used the deprecated gcr.io host", "priority": "INFO"}],
    )  # fmt: skip
    b["tags"] += ["webapp", "main", "ci", f"n-{n}"]
    return b
