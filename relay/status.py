from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from relay.decoding import parse_time, substitutions, trigger_name
from relay.masking import MASK_WINDOW, masked
from relay.states import FINAL, FINAL_STATES, STATUS_MAP
from relay.text import as_mapping, as_text, clip, plain

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any


KEY_MAX = 40  # Bitbucket Cloud: "key: Ensure this value has at most 40 characters"
SERVER_KEY_MAX = 255  # Bitbucket Data Center
NAME_MAX = 255
DESCRIPTION_MAX = 255
URL_MAX = 450
PARENT_MAX = 1024  # Data Center
COMMAND_MAX = 120  # how much of a failed step's command a report shows
DEFAULT_NAME = "Cloud Build"
DEFAULT_KEY = "cloud-build"
KEY_RE = r"(?a)[A-Za-z0-9._-]+"
# Cloud Build's log URLs: .../cloud-build/builds;region=R/ID?project=P, and the older .../builds/ID (global).
LOG_PATH_RE = (
    r"(?a)/(?:cloud-build|gcr)/builds(?:;region=(?P<region>[a-z0-9-]{1,63}))?"
    r"/(?P<id>[A-Za-z0-9_-][A-Za-z0-9._-]{0,127})"
)
PROJECT_PARAMETER_RE = r"(?a)(?:^|&)project=(?P<project>[a-z0-9][a-z0-9-]{0,62})(?:&|$)"


def describe(build: Mapping[str, Any], known: Sequence[str] = ()) -> str:
    """What a person reads next to the state (the `known` secrets, known_secrets(), masked)."""
    meaning = STATUS_MAP[build["status"]]
    text = meaning.text
    took = _duration(build) if meaning.took else ""
    if took:
        text = f"{text} {meaning.took} {took}"
    detail = as_text(as_mapping(build.get("failureInfo")).get("detail")) or as_text(build.get("statusDetail"))
    if detail and meaning.detail:
        text = f"{text}: {' '.join(masked(detail, known).split())}"
    allowed = steps_of(build).allowed
    if meaning.state == "SUCCESSFUL" and allowed:
        text = f"{text}, {allowed} step{'s' if allowed > 1 else ''} allowed to fail"
    if meaning.phase == FINAL and (rejected := rejection(build, known)):
        text = f"{text}: {rejected}"
    return clip(plain(text), DESCRIPTION_MAX)


class Steps(NamedTuple):
    """What a build's steps did."""

    total: int
    passed: int
    failed: int  # failed, or timed out, and not allowed to
    allowed: int  # failed, and allowed to
    not_run: int  # never started, or cancelled
    failed_step: str  # the first step that failed the build, as a reviewer reads it; "" for none
    failed_index: int = -1  # its position (Cloud Build's "Step #N"); -1 for none


def steps_of(build: Mapping[str, Any], known: Sequence[str] = ()) -> Steps:
    """What the build's steps did, the failed one's command with the `known` secrets masked."""
    steps = [step for step in build.get("steps") or () if isinstance(step, dict)] if isinstance(
        build.get("steps"), list
    ) else []  # fmt: skip
    passed = failed = allowed = not_run = 0
    failed_step, failed_index = "", -1
    for index, step in enumerate(steps):
        status = as_text(step.get("status"))
        if status == "SUCCESS":
            passed += 1
        elif status in ("FAILURE", "TIMEOUT", "INTERNAL_ERROR") and step.get("allowFailure") is True:
            allowed += 1
        elif status in ("FAILURE", "TIMEOUT", "INTERNAL_ERROR"):
            failed += 1
            if not failed_step:
                failed_step, failed_index = step_text(step, index, status, known), index
        else:
            not_run += 1
    return Steps(len(steps), passed, failed, allowed, not_run, failed_step, failed_index)


def step_text(step: Mapping[str, Any], index: int, status: str, known: Sequence[str] = ()) -> str:
    """'unit-tests (golang:1.23): go test ./..., exit code 1' - the step's id, image, command (credentials masked)
    and outcome."""
    name = as_text(step.get("id")) or f"step {index}"
    image = as_text(step.get("name"))
    args = step["args"] if isinstance(step.get("args"), list) else []
    words, length = [], 0
    for word in as_text(step.get("entrypoint")).split() + [a for a in args if isinstance(a, str)]:
        if length > MASK_WINDOW:  # what follows is never shown: a command of 100,000 args costs nothing more
            break
        words.append(word[:MASK_WINDOW])
        length += len(words[-1]) + 1
    command = masked(" ".join(words), known)
    code = step.get("exitCode")
    outcome = "timed out" if status == "TIMEOUT" else f"exit code {code}" if isinstance(code, int) else "failed"
    text = f"{name} ({image})" if image else name
    return plain(f"{text}: {clip(command, COMMAND_MAX)}, {outcome}" if command.strip() else f"{text}, {outcome}")


def rejection(build: Mapping[str, Any], known: Sequence[str] = ()) -> str:
    """Who rejected the build's approval and why, when it was rejected (Build.approval.result)."""
    approval = as_mapping(build.get("approval"))
    if as_text(approval.get("state")) != "REJECTED":
        return ""
    result = as_mapping(approval.get("result"))
    who, comment = as_text(result.get("approverAccount")), masked(as_text(result.get("comment")), known)
    return plain(f"approval rejected{f' by {who}' if who else ''}{f' ({comment})' if comment else ''}")


def duration_ms(build: Mapping[str, Any]) -> int | None:
    start, finish = parse_time(build.get("startTime")), parse_time(build.get("finishTime"))
    if not start or not finish or finish < start:
        return None
    return round((finish - start).total_seconds() * 1000)


def _duration(build: Mapping[str, Any]) -> str:
    milliseconds = duration_ms(build)
    return "" if milliseconds is None else format_duration(milliseconds / 1000)


def format_duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


@dataclass(frozen=True)
class CommitStatus:
    """A build's status, in the terms both sites share; each site makes its own body of it."""

    key: str  # at most 40 characters (Cloud)
    state: str  # Cloud's name: INPROGRESS, SUCCESSFUL, FAILED or STOPPED
    name: str
    url: str
    description: str
    refname: str | None = None  # the bare branch name
    server_key: str = ""  # the same key, at most 255 characters (Data Center)
    tag: str | None = None
    parent: str = ""  # the trigger's name, else the key: what a Required builds merge check names
    duration_ms: int | None = None  # of a finished build
    tests: tuple[int, int, int] | None = None  # (passed, failed, skipped) of its JUnit files, when read

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


def status_key(build: Mapping[str, Any], limit: int = KEY_MAX) -> str:
    """A key stable across runs of one trigger, so a re-run replaces its status."""
    chosen = (
        as_text(substitutions(build).get("_BITBUCKET_KEY"))
        or as_text(build.get("buildTriggerId"))
        or trigger_name(build)
    )
    if not chosen:
        return DEFAULT_KEY
    return hashed_key(chosen, limit)


def hashed_key(chosen: str, limit: int) -> str:
    """The key itself when it is plain and within `limit`, else its SHA-1 (a truncated key could collide). A key of
    dots alone is not plain: as the last segment of Cloud's status read, `..` would make it a read of
    `…/commit/{sha}/statuses/` and `.` of `…/statuses/build/` once urllib3 normalises the path."""
    if len(chosen) <= limit and re.fullmatch(KEY_RE, chosen) and chosen.strip("."):
        return chosen
    return hashlib.sha1(chosen.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def build_url(build: Mapping[str, Any]) -> str:
    url = as_text(build.get("logUrl"))
    if url.startswith("https://") and len(url) <= URL_MAX and url.isprintable():
        return url
    project = as_text(build.get("projectId"))
    fallback = f"https://console.cloud.google.com/cloud-build/builds/{build['id']}"
    if project:
        fallback += f"?project={project}"
    return fallback[:URL_MAX]


class BuildRef(NamedTuple):
    """The build a status links to, as Cloud Build's API names it."""

    project: str  # the project's ID or number
    region: str
    build_id: str


def build_at(url: str) -> BuildRef | None:
    """The build a status's URL names: both shapes of Cloud Build's log URL end in the build's id and carry
    its project (`?project=`), the newer one its region too (`builds;region=R/ID`; the older means global).
    None for any other URL. Each part is checked, so none can change the path of a request to Cloud Build."""
    parts = urlsplit(url)
    path = re.fullmatch(LOG_PATH_RE, parts.path)
    project = re.search(PROJECT_PARAMETER_RE, parts.query)
    if parts.scheme != "https" or parts.hostname != "console.cloud.google.com" or not path or not project:
        return None
    return BuildRef(project["project"], path["region"] or "global", path["id"])
