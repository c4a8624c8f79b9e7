"""What trackers are told of a build beyond its status: Jira its build, and, when the build is a deployment, Jira and
a Data Center server its deployment (pure). Each client makes its bodies of these values; the sites give the
repository's and branch's pages."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from relay.decoding import parse_time, substitutions, trigger_name
from relay.masking import masked
from relay.states import FINAL, meaning_of
from relay.status import DEFAULT_NAME, DESCRIPTION_MAX
from relay.text import as_text, clip, plain

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from relay.translate import Update

ENVIRONMENT_SUBSTITUTION = "_DEPLOY_ENVIRONMENT"
TYPE_SUBSTITUTION = "_DEPLOY_ENVIRONMENT_TYPE"
JIRA_TEXT_MAX = 255  # Jira's limit of a pipeline id, a name, a label, an environment's id and name
ENVIRONMENT_TYPES = ("unmapped", "development", "testing", "staging", "production")
# An environment's type when the build names none: the first row of which its name holds a word (staging before
# production: "preprod" and "pre-prod" are staging environments); words, not parts of one ("product-catalog" is none).
IMPLIED_TYPES = (
    ("staging", ("staging", "stage", "stg", "uat", "preprod", "preproduction", "pre prod")),
    ("production", ("production", "prod", "prd", "live")),
    ("testing", ("testing", "test", "tst", "qa")),
    ("development", ("development", "dev", "sandbox")),
)


@dataclass(frozen=True)
class Environment:
    """Where a deployment went: `_DEPLOY_ENVIRONMENT` (its id and name) and its type."""

    name: str
    type: str  # one of ENVIRONMENT_TYPES


@dataclass(frozen=True)
class TrackedBuild:
    """One state of a build as Jira keeps it — a build of a pipeline, and a deployment to an environment when it is one
    (so does a Data Center server, on the commit)."""

    pipeline_id: str  # the status's key: stable across re-runs of one trigger
    pipeline_name: str
    number: int  # the build's createTime in milliseconds: later builds of a pipeline have greater numbers
    sequence: int  # the state's phase: a redelivered earlier state never replaces a later one (Jira keeps the greater)
    name: str
    url: str
    state: str  # Jira's name (the state map's `jira`)
    updated: str  # RFC 3339
    description: str
    label: str
    keys: tuple[str, ...]
    commit: str
    repository_url: str  # the repository's page on its site
    branch: str | None
    branch_url: str | None
    tests: tuple[int, int, int] | None = None  # (passed, failed, skipped)
    environment: Environment | None = None


def environment_of(build: Mapping[str, Any], known: Sequence[str] = ()) -> Environment | None:
    """The environment a build deploys to (`_DEPLOY_ENVIRONMENT`, the `known` secrets and credential shapes masked;
    its type `_DEPLOY_ENVIRONMENT_TYPE` or one its name implies, else unmapped); None for a build that is no
    deployment."""
    subs = substitutions(build)
    name = clip(plain(masked(as_text(subs.get(ENVIRONMENT_SUBSTITUTION)), known)), JIRA_TEXT_MAX)
    if not name:
        return None
    named = as_text(subs.get(TYPE_SUBSTITUTION)).lower()
    words = f" {' '.join(re.split(r'[^a-z0-9]+', name.lower()))} "
    implied = next((kind for kind, names in IMPLIED_TYPES if any(f" {n} " in words for n in names)), "unmapped")
    return Environment(name, named if named in ENVIRONMENT_TYPES else implied)


def build_number(created: datetime | None, build_id: str) -> int:
    """A build's number in its pipeline: its createTime in milliseconds since the epoch (Cloud Build numbers none), so
    a later build's is greater; a message without one (none of Cloud Build's) takes a number of its id, the same for
    each of its states."""
    if created is not None:
        return round(created.timestamp() * 1000)
    return int.from_bytes(hashlib.sha1(build_id.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()[:5])


def tracked_build(
    update: Update,
    build: Mapping[str, Any],
    keys: tuple[str, ...],
    repository_url: str,
    branch_url: str | None,
    known: Sequence[str] = (),
) -> TrackedBuild | None:
    """The build as Jira is told of it (its repository's and branch's pages as their site gives them), or None for a
    status of no Jira state."""
    meaning = meaning_of(build)
    if meaning is None:
        return None
    status, build_id = update.status, as_text(build.get("id"))
    times = ("finishTime", "startTime", "createTime") if meaning.phase == FINAL else ("startTime", "createTime")
    when = next((t for t in (parse_time(build.get(name)) for name in times) if t), None) or datetime.now(UTC)
    pipeline = clip(plain(trigger_name(build)) or DEFAULT_NAME, JIRA_TEXT_MAX)
    return TrackedBuild(
        pipeline_id=status.server_key,
        pipeline_name=pipeline,
        number=build_number(update.created, build_id),
        sequence=meaning.phase + 1,
        name=clip(f"{pipeline} {build_id[:8]}", JIRA_TEXT_MAX),
        url=status.url,
        state=meaning.jira,
        updated=when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        description=clip(status.description, DESCRIPTION_MAX) or meaning.text,
        label=clip(status.refname or status.tag or update.target.commit[:12], JIRA_TEXT_MAX),
        keys=keys,
        commit=update.target.commit,
        repository_url=repository_url,
        branch=status.refname,
        branch_url=branch_url if status.refname else None,
        tests=status.tests,
        environment=environment_of(build, known),
    )
