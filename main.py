"""Cloud Build → Bitbucket commit statuses, on Bitbucket Cloud and on Bitbucket Data Center servers.

A Cloud Function subscribed to the ``cloud-builds`` Pub/Sub topic. Each message
carries the whole Build; the function finds the Bitbucket site, repository,
commit and branch it was built from and posts the build's state to that site's
build-status API, so commits and pull requests show it and merge checks can
count it.

The module reads top to bottom as the data flows; each section has a banner:
    Errors
    Configuration
    The event's deadline and project   (event_scope)
    Decoding
    Translation: the state map          (Cloud Build status → state, description, phase)
    Translation: the repository         (which repository, commit and branch)
    Translation: the status             (a pure function from Build to what to post, and its report)
    Translation: a failed step's log    (which step, the query, cleaning lines, the matchers, annotations)
    Credentials                         (the document, its sources, OAuth tokens)
    Sending a request                   (one session, retries, deadline, the budget, CA files)
    The Bitbucket client: two sites     (Bitbucket Cloud and Data Center, side by side)
    Cloud Build's API                   (where a connected repository lives, when a build was created)
    The failed step's log: Cloud Logging (its last lines, read again while the log is not complete)
    Reporting: never backwards          (and the newest build winning)
    Logging
    The warm instance                   (what one instance keeps between events)
    The path of one event               (handle → report_build → refused_origin, translate, resolve, post)
    Entry points

Where to look:
    the state map                     STATUS_MAP
    which repository and commit       locate, repository_at
    what is sent, and where           BitbucketCloud, BitbucketDataCenter (bodies, paths); send (the request)
    never backwards, newest build     Reporter.report, _replaces
    credentials                       Keyring, parse_credentials, credential_source
    the Code Insights report          report_of, report_fields, Reporter._write_report
    a failed step's lines, annotations failed_step, clean_lines, MATCHERS, annotations_from, CloudLogging
    which project a delivery is from  delivered_from, refused_origin
"""

from __future__ import annotations

# requests, urllib3 and the Google clients are imported inside the functions that use them, never here:
# `import main` then costs milliseconds, not the ~300 ms of the clients, on every cold start
# (docs/performance.md), and an instance loads only the client its credential source needs.
import base64
import binascii
import contextvars
import fnmatch
import hashlib
import ipaddress
import itertools
import json
import math
import os
import posixpath
import re
import sys
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Mapping

    import requests

DEFAULT_API_URL = "https://api.bitbucket.org/2.0"
DEFAULT_OAUTH_TOKEN_URL = "https://bitbucket.org/site/oauth2/access_token"  # noqa: S105 (a URL)
DEFAULT_CLOUD_BUILD_API_URL = "https://cloudbuild.googleapis.com"
DEFAULT_LOGGING_API_URL = "https://logging.googleapis.com"
DEFAULT_LOG_EXCERPT_LINES = 30  # the failed step's last lines a report shows
DEFAULT_LOG_WAIT_SECONDS = 6.0  # a log whose end is not in Cloud Logging yet is read again within this
DEFAULT_MAX_EVENT_AGE_SECONDS = 24 * 3600
DEFAULT_RETRY_BACKOFF_SECONDS = 0.5
DEFAULT_HTTP_TIMEOUT_SECONDS = 10.0  # read timeout of every outbound call
DEFAULT_EVENT_DEADLINE_SECONDS = 120.0  # the deployment's --timeout leaves room beyond it
DEFAULT_RATE_LIMIT_COOLDOWN_SECONDS = 600.0
CONNECT_TIMEOUT_SECONDS = 3.05
HTTP_RETRIES = 4
# Retried inside the call. A 429 is retried only when it carries Retry-After (urllib3 honours it): Bitbucket
# Cloud sends none, and retrying at once spends the hourly budget the next states need.
RETRY_STATUSES = frozenset({500, 502, 503, 504})

KEY_MAX = 40  # Bitbucket Cloud: "key: Ensure this value has at most 40 characters"
SERVER_KEY_MAX = 255  # Bitbucket Data Center
NAME_MAX = 255
DESCRIPTION_MAX = 255
URL_MAX = 450
BRANCH_MAX = 255
PARENT_MAX = 1024  # Data Center
SHOWN_MAX = 200  # how much of a value from a build a log line shows
BUILD_DEPTH_MAX = 32  # how deep a Build may nest (Cloud Build's go about six levels down): deeper is not one
COMMAND_MAX = 120  # how much of a failed step's command a report shows
DEFAULT_NAME = "Cloud Build"
DEFAULT_KEY = "cloud-build"

SHA_RE = re.compile(r"[0-9a-f]{40}", re.ASCII)
# Workspace IDs and repository slugs: ASCII letters, digits, '-', '_' and '.'
# (slugs only), never starting with '.', so no value can add a path segment.
WORKSPACE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}", re.ASCII)
SLUG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}", re.ASCII)
# Data Center project keys (upper case in the API), or ~user for a personal repository.
PROJECT_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}|~[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", re.ASCII)
KEY_RE = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
# The user info of a clone URL (https://user:password@host/...), removed before a URL is matched.
USER_INFO_RE = re.compile(r"(?<=://)[^/?#]*@")
BITBUCKET_URL_RE = re.compile(
    r"(?:https://|ssh://)?(?:(?<![^@/])[^@/]++@)?bitbucket\.org[:/]"
    r"(?P<workspace>[^/]+)/(?P<slug>[^/]+?)(?:\.git)?/?",
    re.IGNORECASE,
)
# Data Center clone URLs: https://host[/context]/scm/PROJECT/slug.git and ssh://git@host[:port]/PROJECT/slug.git
SERVER_HTTPS_URL_RE = re.compile(
    r"(?P<server>https?://[^/?#@]+(?:/[^?#@]*?)?)/scm/(?P<project>[^/]+)/(?P<slug>[^/]+?)(?:\.git)?/?"
)
SERVER_SSH_URL_RE = re.compile(r"ssh://(?P<host>[^/:@]+)(?::\d+)?/(?P<project>[^/]+)/(?P<slug>[^/]+?)(?:\.git)?/?")
SERVER_HOST_RE = re.compile(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]", re.ASCII)
# A path segment of a value from a build is never made of dots alone: a URL normaliser (urllib3's, before any request
# leaves) removes `.` and `..` with the segment before, so the request would go to another path.
NOT_DOTS = r"(?!\.+(?:/|$))"
SERVER_PATH_RE = re.compile(rf"(?:/{NOT_DOTS}[A-Za-z0-9._~-]+)*", re.ASCII)  # a context path, or none
DEFAULT_PORTS = {"https": 443, "http": 80}
CONNECTED_RE = re.compile(
    rf"projects/{NOT_DOTS}[A-Za-z0-9._-]+/locations/[A-Za-z0-9-]+/connections/{NOT_DOTS}[A-Za-z0-9._-]+"
    rf"/repositories/{NOT_DOTS}[A-Za-z0-9._-]+",
    re.ASCII,
)
# Cloud Build's log URLs: .../cloud-build/builds;region=R/ID?project=P, and the older .../builds/ID (global).
LOG_PATH_RE = re.compile(
    r"/(?:cloud-build|gcr)/builds(?:;region=(?P<region>[a-z0-9-]{1,63}))?/(?P<id>[A-Za-z0-9_-][A-Za-z0-9._-]{0,127})",
    re.ASCII,
)
PROJECT_PARAMETER_RE = re.compile(r"(?:^|&)project=(?P<project>[a-z0-9][a-z0-9-]{0,62})(?:&|$)", re.ASCII)
# A project ID, also a domain-scoped one (example.com:project); the lookbehind keeps a search linear.
PROJECT_ID = r"(?:(?<![a-z0-9.-])[a-z0-9.-]++:)?[a-z0-9][a-z0-9-]{0,62}"
PROJECT_ID_RE = re.compile(PROJECT_ID, re.ASCII)
# The topic a delivery came from: a CloudEvent's source, a 1st gen context's resource, a push request's path.
TOPIC_RE = re.compile(rf"(?://pubsub\.googleapis\.com/)?projects/(?P<project>{PROJECT_ID})/topics/[^/]+", re.ASCII)
OTHER_HOSTS = ("github.com", "gitlab.com", "gitlab.")
MIRROR_PREFIX = "bitbucket_"
LOG_VIEW_RE = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)


# --- Errors ------------------------------------------------------------------


class ConfigurationError(Exception):
    """The deployment is misconfigured. Raised, so events wait for the fix."""


class InvalidMessage(Exception):
    """The message is not a Cloud Build notification. Logged and acknowledged."""


class TransientError(Exception):
    """Worth another try later. Raised, so Pub/Sub redelivers the event."""


class ConsumerRefused(TransientError):
    """Bitbucket's token endpoint refused the OAuth consumer's credentials."""


class Rejected(Exception):
    """Bitbucket refused the request and retrying cannot mend it."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # Bitbucket's answer (400, 403, 404, ...)


class RepositoryNotFound(Rejected):
    """Bitbucket answered 404 for the repository."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


class NotServed(Exception):
    """No entry of the credentials serves the repository (any more): nothing is sent. Logged and acknowledged."""


class NotLocated(Exception):
    """Cloud Build's API gave no usable answer for a connected repository. Logged and acknowledged."""


class Unreachable(TransientError):
    """Nothing answered: the site (scheme://host:port) could not be reached, or did not answer in time."""

    def __init__(self, message: str, origin: str) -> None:
        super().__init__(message)
        self.origin = origin


class UntrustedCertificate(TransientError):
    """A server's TLS certificate is not trusted: nothing was sent. Logged as an ERROR, redelivered."""


class RateLimited(TransientError):
    """Bitbucket answered 429 after the retries inside the call: the credential's hourly budget is spent."""


# --- Configuration -----------------------------------------------------------


class Patterns:
    """Shell-style patterns of `owner/slug` (workspace/repo_slug, or PROJECT/repo_slug on a server),
    matched without case and compiled once; no pattern at all matches every repository."""

    def __init__(self, patterns: tuple[str, ...] = ()) -> None:
        self.patterns = tuple(p.lower() for p in patterns)
        self._regex = re.compile("|".join(fnmatch.translate(p) for p in self.patterns)) if self.patterns else None

    def match(self, name: str) -> bool:
        return self._regex is None or self._regex.match(name.lower()) is not None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Patterns) and other.patterns == self.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)

    def __repr__(self) -> str:
        return f"Patterns({self.patterns!r})"


@dataclass(frozen=True)
class Config:
    api_url: str = DEFAULT_API_URL
    oauth_token_url: str = DEFAULT_OAUTH_TOKEN_URL
    cloud_build_api_url: str = DEFAULT_CLOUD_BUILD_API_URL
    repositories: Patterns = field(default_factory=Patterns)  # BITBUCKET_REPOSITORIES
    max_event_age_seconds: float = DEFAULT_MAX_EVENT_AGE_SECONDS
    retry_backoff_seconds: float = DEFAULT_RETRY_BACKOFF_SECONDS
    http_timeout_seconds: float = DEFAULT_HTTP_TIMEOUT_SECONDS
    event_deadline_seconds: float = DEFAULT_EVENT_DEADLINE_SECONDS
    rate_limit_cooldown_seconds: float = DEFAULT_RATE_LIMIT_COOLDOWN_SECONDS
    code_insights: bool = True  # CODE_INSIGHTS=off: no report with a final state
    logging_api_url: str = DEFAULT_LOGGING_API_URL
    log_excerpts: str = "private"  # LOG_EXCERPTS: a failed step's lines for private repositories, all, or off
    log_excerpt_lines: int = DEFAULT_LOG_EXCERPT_LINES
    log_wait_seconds: float = DEFAULT_LOG_WAIT_SECONDS  # how long a log not complete yet is waited for
    log_view: str = ""  # LOG_VIEW: the log view (of each project's _Default bucket) the function may read
    # TEST_REPORT_BUCKETS: the only buckets JUnit files are read from, as (project, bucket); project "": any project's
    test_report_buckets: frozenset[tuple[str, str]] = frozenset()
    connections: int = 10  # kept open per site: the Functions Framework's THREADS, events handled at once
    build_projects: frozenset[str] = frozenset()  # BUILD_PROJECTS: the projects whose builds are served; none: any

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        urls = {name: validated_url(env, variable, getattr(cls, name)) for name, variable in URL_VARIABLES.items()}
        numbers = {name: _number(env, number, getattr(cls, name)) for name, number in NUMBER_VARIABLES.items()}
        patterns = (p.strip() for p in env.get("BITBUCKET_REPOSITORIES", "").split(","))
        switch = env.get("CODE_INSIGHTS", "on").strip().lower() or "on"
        if switch not in ("on", "off"):
            raise ConfigurationError("CODE_INSIGHTS must be on or off")
        excerpts = env.get("LOG_EXCERPTS", "private").strip().lower() or "private"
        if excerpts not in ("private", "all", "off"):
            raise ConfigurationError("LOG_EXCERPTS must be private, all or off")
        view = env.get("LOG_VIEW", "").strip()
        if view and not LOG_VIEW_RE.fullmatch(view):
            raise ConfigurationError("LOG_VIEW must be a log view's ID (letters, digits, '_' and '-')")
        repositories = Patterns(tuple(p for p in patterns if p))
        connections = max(cls.connections, _threads(env))
        projects = frozenset(env.get("BUILD_PROJECTS", "").replace(",", " ").split())
        if any(not PROJECT_ID_RE.fullmatch(p) for p in projects):
            raise ConfigurationError("BUILD_PROJECTS must be project IDs, separated by spaces or commas")
        buckets = report_buckets(env.get("TEST_REPORT_BUCKETS", ""), projects)
        settings: dict[str, Any] = {**urls, **numbers}
        return cls(
            **settings,
            repositories=repositories,
            code_insights=switch == "on",
            log_excerpts=excerpts,
            log_view=view,
            test_report_buckets=buckets,
            connections=connections,
            build_projects=projects,
        )

    @property
    def timeout(self) -> tuple[float, float]:
        """(connect, read) timeouts of one attempt of an outbound call."""
        return (min(CONNECT_TIMEOUT_SECONDS, self.http_timeout_seconds), self.http_timeout_seconds)


# The environment variable that sets each field of Config.
URL_VARIABLES = {
    "api_url": "BITBUCKET_API_URL",
    "oauth_token_url": "BITBUCKET_OAUTH_TOKEN_URL",
    "cloud_build_api_url": "CLOUD_BUILD_API_ENDPOINT",
    "logging_api_url": "LOGGING_API_ENDPOINT",
}


class Number(NamedTuple):
    """A numeric setting: its variable, its unit and the bounds it must lie within (both included)."""

    variable: str
    unit: str
    low: float
    high: float
    whole: bool = False

    def said(self) -> str:
        kind = f"a whole number of {self.unit}" if self.whole else f"a number of {self.unit}"
        return f"{self.variable} must be {kind} from {self.low} to {self.high}"


# Each numeric setting, checked once when an instance starts: finite, in its unit, within bounds where it still means
# something (docs/configuration.md says why each).
NUMBER_VARIABLES = {
    "max_event_age_seconds": Number("MAX_EVENT_AGE_SECONDS", "seconds", 60, 31 * 24 * 3600),  # Pub/Sub's longest
    "retry_backoff_seconds": Number("HTTP_RETRY_BACKOFF_SECONDS", "seconds", 0, 10),
    "http_timeout_seconds": Number("HTTP_TIMEOUT_SECONDS", "seconds", 0.01, 300),
    "event_deadline_seconds": Number("EVENT_DEADLINE_SECONDS", "seconds", 1, 500),  # an event function's --timeout: 540
    "rate_limit_cooldown_seconds": Number("RATE_LIMIT_COOLDOWN_SECONDS", "seconds", 0, 3600),  # the budget is hourly
    "log_excerpt_lines": Number("LOG_EXCERPT_LINES", "lines", 0, 1000, whole=True),  # LOG_LINES_SCANNED are read
    "log_wait_seconds": Number("LOG_WAIT_SECONDS", "seconds", 0, 60),
}
THREADS = Number("THREADS", "events handled at once", 1, 1000, whole=True)  # Cloud Run's highest concurrency


def report_buckets(raw: str, projects: frozenset[str]) -> frozenset[tuple[str, str]]:
    """TEST_REPORT_BUCKETS: each entry a bucket any served project's builds may name (a deployment for one project),
    or PROJECT=bucket, a bucket only that project's builds may name; a deployment serving several projects must
    say which project each bucket is for, so no team's build can read another's test results."""
    found = set()
    for entry in raw.replace(",", " ").split():
        project, _, bucket = entry.rpartition("=")
        if not BUCKET_RE.fullmatch(bucket) or (project and not PROJECT_ID_RE.fullmatch(project)):
            raise ConfigurationError(
                "TEST_REPORT_BUCKETS must be bucket names, or PROJECT=bucket, separated by spaces or commas"
            )
        if project and projects and project not in projects:
            raise ConfigurationError(f"TEST_REPORT_BUCKETS names project {project!r}, which is not in BUILD_PROJECTS")
        found.add((project, bucket))
    if len(projects) > 1 and any(not project for project, _ in found):
        raise ConfigurationError(
            "TEST_REPORT_BUCKETS must name each bucket's project (PROJECT=bucket) when BUILD_PROJECTS lists several "
            "projects: a bucket every project's builds may name lets one team's build read another's test results"
        )
    return frozenset(found)


def _threads(env: Mapping[str, str]) -> int:
    """THREADS, the Functions Framework's events at once (0 when unset)."""
    return int(_number(env, THREADS, 0))


def _number(env: Mapping[str, str], number: Number, default: float) -> float:
    """The setting's value (`default` when unset), or a ConfigurationError naming the variable, its unit and bounds:
    never an infinity (`inf`, `1e400`), a NaN or a fraction of a whole number."""
    raw = env.get(number.variable, "").strip()
    if not raw:
        return default
    try:
        value = float(raw) if raw.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not number.low <= value <= number.high or (number.whole and not value.is_integer()):
        raise ConfigurationError(f"{number.said()} (not {_clip(raw, 40)!r})")
    return int(value) if number.whole else value


def validated_url(env: Mapping[str, str], name: str, default: str) -> str:
    url = env.get(name) or default
    parts = urlsplit(url)
    if parts.hostname and _secure(parts.scheme, parts.hostname):
        return url.rstrip("/")
    raise ConfigurationError(f"{name} must be an https:// URL (plain http only for loopback)")


def _secure(scheme: str, host: str) -> bool:
    """https, or plain http to this machine only (local runs and tests)."""
    return scheme == "https" or (scheme == "http" and _is_loopback(host))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- The event's deadline and project -----------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)
# The Google Cloud project the current event speaks for: its topic's, else its Build's. Credentials may be
# limited to projects, and the keyring reads it here rather than through every layer between.
_project: contextvars.ContextVar[str] = contextvars.ContextVar("project", default="")


@contextmanager
def event_scope(seconds: float, project: str) -> Iterator[None]:
    """For one event: every call made, retries included, ends within `seconds`; credentials are chosen for
    `project`, the Google Cloud project the event speaks for."""
    deadline, speaks_for = _deadline.set(time.monotonic() + seconds), _project.set(project)
    try:
        yield
    finally:
        _deadline.reset(deadline)
        _project.reset(speaks_for)


def time_left() -> float:
    """Seconds until the current event's deadline (infinite outside an event)."""
    deadline = _deadline.get()
    return math.inf if deadline is None else deadline - time.monotonic()


def google_timeout() -> float:
    """The timeout for a Google client call: what is left of the event (60 s, the clients' own default,
    outside one)."""
    left = time_left()
    if left <= 0:
        raise TransientError("the event's deadline (EVENT_DEADLINE_SECONDS) passed before reading the credentials")
    return 60.0 if math.isinf(left) else left


# --- Decoding ----------------------------------------------------------------


def decode_build(data: Any) -> dict[str, Any]:
    """base64 → JSON → Build, or InvalidMessage saying why not."""
    if not data:
        raise InvalidMessage("the message has no data")
    if not isinstance(data, (str, bytes)):
        raise InvalidMessage(f"the message data is a {type(data).__name__}, not base64 text")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidMessage("the message data is not valid base64") from None
    try:
        build = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage("the message data is not JSON") from None
    except RecursionError:
        raise InvalidMessage(f"the message data is nested deeper than {BUILD_DEPTH_MAX} levels") from None
    if not isinstance(build, dict):
        raise InvalidMessage(f"the message data is a JSON {type(build).__name__}, not a Build object")
    if _depth(build) > BUILD_DEPTH_MAX:
        raise InvalidMessage(f"the message data is nested deeper than {BUILD_DEPTH_MAX} levels")
    for name in ("id", "status"):
        if not isinstance(build.get(name), str) or not build[name]:
            raise InvalidMessage(f"the Build has no {name!r}")
    return build


def _depth(value: Any) -> int:
    """How deep a JSON value nests (a Build's deepest field is a few levels down), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= BUILD_DEPTH_MAX:  # deeper than that is refused: no need to look further
                stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# What the function reads of a Build, and of each of its steps: a resync holds only these of each listed build.
BUILD_FIELDS = frozenset(
    {"id", "projectId", "status", "statusDetail", "failureInfo", "buildTriggerId", "logUrl", "createTime",
     "startTime", "finishTime", "substitutions", "source", "sourceProvenance", "steps", "warnings", "approval",
     "options", "results"}
)  # fmt: skip
STEP_FIELDS = frozenset({"id", "name", "entrypoint", "status", "exitCode", "allowFailure", "dir"})
RESULTS_FIELDS = frozenset({"artifactManifest"})  # where a passing build's artifacts (its JUnit files) are listed


def essentials(build: Mapping[str, Any]) -> dict[str, Any]:
    """The Build with only what the function reads of it: the same status and report come of it."""
    kept = {name: value for name, value in build.items() if name in BUILD_FIELDS}
    if isinstance(kept.get("steps"), list):
        kept["steps"] = [_essential_step(step) for step in kept["steps"]]
    if isinstance(results := kept.get("results"), dict):  # not its images, step outputs and timings
        kept["results"] = {name: value for name, value in results.items() if name in RESULTS_FIELDS}
    return kept


def _essential_step(step: Any) -> Any:
    if not isinstance(step, dict):
        return step
    kept = {name: value for name, value in step.items() if name in STEP_FIELDS}
    if isinstance(args := step.get("args"), list):  # what of the command is masked (MASK_WINDOW), then shown
        kept["args"], length = [], 0
        for arg in (a for a in args if isinstance(a, str)):
            if length > MASK_WINDOW:
                break
            kept["args"].append(arg[: MASK_WINDOW + 1 - length])
            length += len(arg) + 1
    return kept


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as Cloud Build and Pub/Sub write it ('Z' or 'z', up to 9 fraction digits), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().upper())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- Translation: the state map ----------------------------------------------


class Meaning(NamedTuple):
    """What one Cloud Build status means on Bitbucket."""

    state: str  # Bitbucket Cloud's name: INPROGRESS, SUCCESSFUL, FAILED or STOPPED
    text: str  # how the description begins
    phase: int  # how far along the build is: a status is never moved back to a lower phase
    took: str = ""  # "in" or "after": a finished build's duration follows the text
    detail: bool = False  # failureInfo's detail (or statusDetail) follows


FINAL = 3  # the phase of every final state
STATUS_MAP = {
    "PENDING": Meaning("INPROGRESS", "Awaiting approval", 0),
    "QUEUED": Meaning("INPROGRESS", "Queued", 1),
    "WORKING": Meaning("INPROGRESS", "Running", 2),
    "SUCCESS": Meaning("SUCCESSFUL", "Succeeded", FINAL, "in"),
    "FAILURE": Meaning("FAILED", "Failed", FINAL, "after", detail=True),
    "INTERNAL_ERROR": Meaning("FAILED", "Cloud Build internal error", FINAL, "after", detail=True),
    "TIMEOUT": Meaning("FAILED", "Timed out", FINAL, "after", detail=True),
    "CANCELLED": Meaning("STOPPED", "Cancelled", FINAL),
    "EXPIRED": Meaning("STOPPED", "Expired in queue", FINAL),
}
FINAL_STATES = frozenset(m.state for m in STATUS_MAP.values() if m.phase == FINAL)


def meaning_of(build: Mapping[str, Any]) -> Meaning | None:
    """What the build's status means on Bitbucket; None for a status of no Bitbucket state."""
    status = build.get("status")
    return STATUS_MAP.get(status) if isinstance(status, str) else None


IN_PROGRESS = tuple(m for m in STATUS_MAP.values() if m.phase < FINAL)


def phase(state: str, description: str) -> int:
    """How far along the build a shown status is: its in-progress description's phase, FINAL for a final
    state, -1 for a description that is none of ours (any state of ours advances over it)."""
    if state in FINAL_STATES:
        return FINAL
    return next((m.phase for m in IN_PROGRESS if description.startswith(m.text)), -1)


def describe(build: Mapping[str, Any]) -> str:
    """What a person reads next to the state."""
    meaning = STATUS_MAP[build["status"]]
    text = meaning.text
    took = _duration(build) if meaning.took else ""
    if took:
        text = f"{text} {meaning.took} {took}"
    detail = _text(_dict(build.get("failureInfo")).get("detail")) or _text(build.get("statusDetail"))
    if detail and meaning.detail:
        text = f"{text}: {' '.join(masked(detail, substituted_secrets(build)).split())}"
    allowed = steps_of(build).allowed
    if meaning.state == "SUCCESSFUL" and allowed:
        text = f"{text}, {allowed} step{'s' if allowed > 1 else ''} allowed to fail"
    if meaning.phase == FINAL and (rejected := rejection(build)):
        text = f"{text}: {rejected}"
    return _clip(plain(text), DESCRIPTION_MAX)


class Steps(NamedTuple):
    """What a build's steps did."""

    total: int
    passed: int
    failed: int  # failed, or timed out, and not allowed to
    allowed: int  # failed, and allowed to
    not_run: int  # never started, or cancelled
    failed_step: str  # the first step that failed the build, as a reviewer reads it; "" for none
    failed_index: int = -1  # its position (Cloud Build's "Step #N"); -1 for none


def steps_of(build: Mapping[str, Any]) -> Steps:
    steps = [step for step in build.get("steps") or () if isinstance(step, dict)] if isinstance(
        build.get("steps"), list
    ) else []  # fmt: skip
    passed = failed = allowed = not_run = 0
    failed_step, failed_index = "", -1
    secrets = substituted_secrets(build)
    for index, step in enumerate(steps):
        status = _text(step.get("status"))
        if status == "SUCCESS":
            passed += 1
        elif status in ("FAILURE", "TIMEOUT", "INTERNAL_ERROR") and step.get("allowFailure") is True:
            allowed += 1
        elif status in ("FAILURE", "TIMEOUT", "INTERNAL_ERROR"):
            failed += 1
            if not failed_step:
                failed_step, failed_index = step_text(step, index, status, secrets), index
        else:
            not_run += 1
    return Steps(len(steps), passed, failed, allowed, not_run, failed_step, failed_index)


def step_text(step: Mapping[str, Any], index: int, status: str, secrets: Sequence[str] = ()) -> str:
    """'unit-tests (golang:1.23): go test ./..., exit code 1' - the step's id, image, command (credentials masked)
    and outcome."""
    name = _text(step.get("id")) or f"step {index}"
    image = _text(step.get("name"))
    args = step["args"] if isinstance(step.get("args"), list) else []
    words, length = [], 0
    for word in _text(step.get("entrypoint")).split() + [a for a in args if isinstance(a, str)]:
        if length > MASK_WINDOW:  # what follows is never shown: a command of 100,000 args costs nothing more
            break
        words.append(word[:MASK_WINDOW])
        length += len(words[-1]) + 1
    command = masked(" ".join(words), secrets)
    code = step.get("exitCode")
    outcome = "timed out" if status == "TIMEOUT" else f"exit code {code}" if isinstance(code, int) else "failed"
    text = f"{name} ({image})" if image else name
    return plain(f"{text}: {_clip(command, COMMAND_MAX)}, {outcome}" if command.strip() else f"{text}, {outcome}")


def rejection(build: Mapping[str, Any]) -> str:
    """Who rejected the build's approval and why, when it was rejected (Build.approval.result)."""
    approval = _dict(build.get("approval"))
    if _text(approval.get("state")) != "REJECTED":
        return ""
    result = _dict(approval.get("result"))
    who, comment = _text(result.get("approverAccount")), masked(_text(result.get("comment")))
    return plain(f"approval rejected{f' by {who}' if who else ''}{f' ({comment})' if comment else ''}")


def plain(text: str) -> str:
    """Text from a build with every control or format character (newline, bidi, zero-width) made a space."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _duration_ms(build: Mapping[str, Any]) -> int | None:
    start, finish = parse_time(build.get("startTime")), parse_time(build.get("finishTime"))
    if not start or not finish or finish < start:
        return None
    return round((finish - start).total_seconds() * 1000)


def _duration(build: Mapping[str, Any]) -> str:
    milliseconds = _duration_ms(build)
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


def _clip(text: str, limit: int = SHOWN_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


# --- Translation: the repository ---------------------------------------------


@dataclass(frozen=True)
class Repository:
    """A repository on Bitbucket Cloud (no server: `owner` is the workspace ID) or on a Data Center
    server (`server` its base URL, `owner` the project key or ~user). An SSH clone URL names only the
    server's host (`ssh_host`, no server) until an entry of the credentials says which server it is."""

    owner: str
    slug: str
    server: str | None = None
    ssh_host: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.slug}"

    @property
    def on_cloud(self) -> bool:
        return self.server is None and self.ssh_host is None

    def shown(self) -> str:
        """How a log line names it: the server's host or URL first, for a Data Center repository."""
        where = self.server or self.ssh_host
        return f"{where} {self.full_name}" if where else self.full_name


@dataclass(frozen=True)
class Target:
    """Where a build's status goes: the candidates are tried in order."""

    candidates: tuple[Repository, ...]
    commit: str
    branch: str | None
    origin: str  # how the repository was found, for the log
    mirror: str | None = None  # the mirror's repoName when the split is ambiguous
    tag: str | None = None  # the tag of a tag build
    connected: str | None = None  # a Cloud Build repository resource: Cloud Build's API says where it is


def substitutions(build: Mapping[str, Any]) -> Mapping[str, Any]:
    return _dict(build.get("substitutions"))


def substituted_secrets(build: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of the build's substitutions whose names say they are secrets (_API_TOKEN, _DB_PASSWORD): Cloud
    Build expands them into a step's args, so they are masked wherever the build's text is shown."""
    return tuple(v for k, v in substitutions(build).items() if isinstance(v, str) and re.search(SECRET_WORDS, str(k)))


def trigger_name(build: Mapping[str, Any]) -> str:
    return _text(substitutions(build).get("TRIGGER_NAME"))


def locate(build: Mapping[str, Any]) -> Target | Skip:
    """Find the Bitbucket repository, commit and branch, in the order docs/what-reviewers-see.md gives: the
    _BITBUCKET_REPO substitution, the git source, a Cloud Source Repositories mirror, a Cloud Build connection."""
    for finder in (_from_substitutions, _from_git_source, _from_mirror, _from_connection):
        found = finder(build, substitutions(build))
        if isinstance(found, Skip):
            return found
        if found is not None:
            return _target(found, _text(substitutions(build).get("TAG_NAME")))
    source = _dict(build.get("source"))
    if "storageSource" in source or "storageSourceManifest" in source:
        return Skip("the build's source is a storage bucket and names no Bitbucket repository")
    return Skip("the build names no Bitbucket repository")


@dataclass(frozen=True)
class Evidence:
    """What one source of a Build says of its repository and commit, before the names are checked."""

    origin: str  # how the repository was found, for the log
    candidates: list[Repository]  # in the order to try them
    commit: str
    branch: str
    mirror: str = ""  # the mirror's repoName
    connected: str = ""  # the Cloud Build repository resource


def _source(build: Mapping[str, Any], declared: str, resolved: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """One kind of source as the build config declared it, and as Cloud Build resolved it."""
    return _dict(_dict(build.get("source")).get(declared)), _dict(_dict(build.get("sourceProvenance")).get(resolved))


def _from_substitutions(build: Mapping[str, Any], subs: Mapping[str, Any]) -> Evidence | Skip | None:
    explicit = _text(subs.get("_BITBUCKET_REPO"))
    if not explicit:
        return None
    server = _text(subs.get("_BITBUCKET_SERVER"))
    normalized = normalized_server(server) if server else None
    if server and not normalized:
        return Skip(f"_BITBUCKET_SERVER {loggable(server)!r} is not an https:// URL", "WARNING")
    commit = _text(subs.get("_BITBUCKET_COMMIT")) or _text(subs.get("COMMIT_SHA"))
    branch = _text(subs.get("_BITBUCKET_BRANCH")) or _text(subs.get("BRANCH_NAME"))
    owner, _, slug = explicit.partition("/")
    return Evidence("substitution _BITBUCKET_REPO", [Repository(owner, slug, normalized)], commit, branch)


def _from_git_source(build: Mapping[str, Any], subs: Mapping[str, Any]) -> Evidence | Skip | None:
    declared, resolved = _source(build, "gitSource", "resolvedGitSource")
    if not (url := _text(resolved.get("url")) or _text(declared.get("url"))):
        return None
    found = repository_at(url)
    if found is None:
        return Skip(f"the build's git source {loggable(url)!r} is not on bitbucket.org or a Bitbucket server")
    commit = _text(subs.get("COMMIT_SHA")) or _text(resolved.get("revision")) or _text(declared.get("revision"))
    return Evidence("gitSource", [found], commit, _text(subs.get("BRANCH_NAME")))


def _from_mirror(build: Mapping[str, Any], subs: Mapping[str, Any]) -> Evidence | Skip | None:
    declared, resolved = _source(build, "repoSource", "resolvedRepoSource")
    mirror = _text(resolved.get("repoName")) or _text(declared.get("repoName"))
    if mirror and not mirror.startswith(MIRROR_PREFIX):
        return Skip(f"the build's mirror {loggable(mirror)!r} is not a Bitbucket mirror")
    if not mirror:
        return None
    commit = _text(resolved.get("commitSha")) or _text(subs.get("COMMIT_SHA"))
    branch = _text(declared.get("branchName")) or _text(subs.get("BRANCH_NAME"))
    splits = [Repository(owner, slug) for owner, slug in mirror_splits(mirror[len(MIRROR_PREFIX) :])]
    return Evidence("Cloud Source Repositories mirror", splits, commit, branch, mirror=mirror)


def _from_connection(build: Mapping[str, Any], subs: Mapping[str, Any]) -> Evidence | Skip | None:
    connected, resolved = _source(build, "connectedRepository", "resolvedConnectedRepository")
    if not connected:
        return None
    name = _text(connected.get("repository"))
    if not CONNECTED_RE.fullmatch(name):
        return Skip(f"the build's connected repository {loggable(name)!r} is not a repository resource name", "WARNING")
    if any(host in _text(subs.get("_HEAD_REPO_URL")).lower() for host in OTHER_HOSTS):
        return Skip("the build's connected repository is not on Bitbucket")
    # REPO_FULL_NAME is only the fallback for Bitbucket Cloud when Cloud Build's API cannot be asked.
    owner, _, slug = _text(subs.get("REPO_FULL_NAME")).partition("/")
    commit = _text(subs.get("COMMIT_SHA")) or _text(resolved.get("revision"))
    fallback = [Repository(owner, slug)] if owner else []
    return Evidence("Cloud Build connection", fallback, commit, _text(subs.get("BRANCH_NAME")), connected=name)


def repository_at(url: str) -> Repository | None:
    """The repository of a clone URL on bitbucket.org or in the shape of a Data Center server's (user info
    such as https://jdoe@host/... ignored); None for any other URL. Its names are not checked yet (see
    `valid_repository`)."""
    url = USER_INFO_RE.sub("", url, count=1)
    if match := BITBUCKET_URL_RE.fullmatch(url):
        return Repository(match["workspace"], match["slug"])
    if (match := SERVER_HTTPS_URL_RE.fullmatch(url)) and (server := normalized_server(match["server"])):
        return Repository(match["project"], match["slug"], server=server)
    if match := SERVER_SSH_URL_RE.fullmatch(url):
        return Repository(match["project"], match["slug"], ssh_host=match["host"].lower())
    return None


def normalized_server(url: str) -> str | None:
    """A Data Center server's base URL as entries and builds are compared: https (http only on
    loopback), host in lower case, no default port, no user, query or fragment, no trailing '/'; else None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    path = parts.path.rstrip("/")
    if not _secure(parts.scheme, host) or parts.username or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    if not SERVER_HOST_RE.fullmatch(netloc) or not SERVER_PATH_RE.fullmatch(path):
        return None
    shown_port = f":{port}" if port and port != DEFAULT_PORTS[parts.scheme] else ""
    return f"{parts.scheme}://{netloc}{shown_port}{path}"


def mirror_splits(name: str) -> list[tuple[str, str]]:
    """Every way to split '<workspace>_<slug>', first '_' first."""
    return [(name[:i], name[i + 1 :]) for i, char in enumerate(name) if char == "_"]


def _target(found: Evidence, tag: str) -> Target | Skip:
    """The evidence checked: names that cannot change a request's path, a full commit SHA, a bare branch."""
    candidates = tuple(repository for given in found.candidates if (repository := valid_repository(given)))
    if not candidates and not found.connected:
        shown = ", ".join(loggable(r.full_name) for r in found.candidates) or "(none)"
        return Skip(f"{found.origin} gives no valid Bitbucket repository name: {shown!r}", "WARNING")
    commit = found.commit.lower()
    if not SHA_RE.fullmatch(commit):
        return Skip(f"{found.origin} gives no full 40-hex commit SHA (got {loggable(commit, 80)!r})", "WARNING")
    ambiguous = found.mirror if len(candidates) > 1 else None  # which split works is learnt
    branch = refname(found.branch)
    tag_ref = None if branch or found.mirror else refname(tag)  # a mirror build's tag is not known
    return Target(candidates, commit, branch, found.origin, ambiguous or None, tag_ref, found.connected or None)


def valid_repository(repository: Repository) -> Repository | None:
    """The repository if its names cannot change the shape of a request path, else None."""
    if not SLUG_RE.fullmatch(repository.slug):
        return None
    if repository.on_cloud:
        return repository if WORKSPACE_RE.fullmatch(repository.owner) else None
    if not PROJECT_RE.fullmatch(repository.owner):
        return None
    # Project keys are upper case in the API and matched without case in clone URLs.
    return repository if repository.owner.startswith("~") else replace(repository, owner=repository.owner.upper())


def refname(branch: str) -> str | None:
    """The bare branch name, or None when it cannot be one."""
    branch = branch.removeprefix("refs/heads/")
    if not branch or len(branch) > BRANCH_MAX or not branch.isprintable() or branch != branch.strip():
        return None
    return branch


def allowed(target: Target, config: Config) -> Target | Skip:
    """The target's repositories that BITBUCKET_REPOSITORIES allows, or why none is."""
    if not config.repositories:
        return target
    kept = tuple(r for r in target.candidates if config.repositories.match(r.full_name))
    if not kept:
        names = ", ".join(loggable(r.full_name) for r in target.candidates)
        return Skip(f"repository {names} is not in BITBUCKET_REPOSITORIES")
    return replace(target, candidates=kept)


# --- Translation: the status (pure) ------------------------------------------


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


@dataclass(frozen=True)
class Update:
    """One build's state, ready to post."""

    build_id: str
    target: Target
    status: CommitStatus
    created: datetime | None = None  # the build's createTime: of two builds of one status, the later one wins
    report: Report | None = None  # with a final state, its Code Insights report


@dataclass(frozen=True)
class Skip:
    reason: str
    severity: str = "INFO"  # WARNING for a build's bad input: never ERROR, which pages whoever runs the relay


def translate(build: Mapping[str, Any], config: Config) -> Update | Skip:
    """Decide what a Build means for Bitbucket; no I/O."""
    meaning = meaning_of(build)
    if meaning is None:
        return Skip(f"build status {loggable(_text(build.get('status')), 40)!r} has no Bitbucket state", "WARNING")
    target = locate(build)
    if isinstance(target, Skip):
        return target
    if not target.connected:  # a connected repository is checked once Cloud Build's API has said which it is
        target = allowed(target, config)
        if isinstance(target, Skip):
            return target
    server_key = status_key(build, SERVER_KEY_MAX)
    status = CommitStatus(
        key=status_key(build, KEY_MAX),
        state=meaning.state,
        name=_clip(plain(trigger_name(build)) or DEFAULT_NAME, NAME_MAX),
        url=build_url(build),
        description=describe(build),
        refname=target.branch,
        server_key=server_key,
        tag=target.tag,
        parent=_clip(plain(trigger_name(build)), PARENT_MAX) or server_key,
        duration_ms=_duration_ms(build) if meaning.phase == FINAL else None,
    )
    report = report_of(build, status) if config.code_insights and status.is_final else None
    return Update(build["id"], target, status, parse_time(build.get("createTime")), report)


def status_key(build: Mapping[str, Any], limit: int = KEY_MAX) -> str:
    """A key stable across runs of one trigger, so a re-run replaces its status."""
    chosen = (
        _text(substitutions(build).get("_BITBUCKET_KEY")) or _text(build.get("buildTriggerId")) or trigger_name(build)
    )
    if not chosen:
        return DEFAULT_KEY
    return hashed_key(chosen, limit)


def hashed_key(chosen: str, limit: int) -> str:
    """The key itself when it is plain and within `limit`, else its SHA-1 (a truncated key could collide). A key of
    dots alone is not plain: as the last segment of Cloud's status read, `..` would make it a read of
    `…/commit/{sha}/statuses/` and `.` of `…/statuses/build/` once urllib3 normalises the path."""
    if len(chosen) <= limit and KEY_RE.fullmatch(chosen) and chosen.strip("."):
        return chosen
    return hashlib.sha1(chosen.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def build_url(build: Mapping[str, Any]) -> str:
    url = _text(build.get("logUrl"))
    if url.startswith("https://") and len(url) <= URL_MAX and url.isprintable():
        return url
    project = _text(build.get("projectId"))
    fallback = f"https://console.cloud.google.com/cloud-build/builds/{build['id']}"
    if project:
        fallback += f"?project={project}"
    return fallback[:URL_MAX]


REPORT_PREFIX = "cloud-build-"  # a report's key: never one of another tool's
REPORTER = "Google Cloud Build"
TITLE_MAX = 450  # Data Center's limit; Cloud's is not documented
DETAILS_MAX = 2000  # Data Center's limit
FIELD_MAX = 250  # a data field's text
LINE_MAX = 200  # a line of a report's details
WARNINGS_SHOWN = 3


@dataclass(frozen=True)
class Report:
    """A finished build's Code Insights report, in the terms both sites share; each site makes its body."""

    key: str  # cloud-build-<the status's key> (Cloud)
    server_key: str  # cloud-build-<the status's Data Center key>: what a required report names
    title: str
    details: str
    passed: bool
    link: str
    duration_ms: int | None
    steps: Steps
    trigger: str
    warnings: int
    log: FailedStep | str | None = None  # the failed step whose lines it may show, or why none can be read
    annotations: tuple[Annotation, ...] = ()
    tests: str = ""  # its test results' counts, when read
    masks: tuple[str, ...] = field(default=(), repr=False)  # the build's own secrets: masked in its lines

    def with_excerpt(self, excerpt: Excerpt) -> Report:
        """The report with the failed step's last lines ending its details (within DETAILS_MAX: the last lines
        win) and the errors found in them as its annotations."""
        annotations = merged(self.annotations, excerpt.annotations)
        if not excerpt.lines:
            note = f"\nNo log excerpt: {excerpt.note}" if excerpt.note else ""
            return replace(self, details=_clip(self.details + note, DETAILS_MAX), annotations=annotations)
        said = f" ({excerpt.note})" if excerpt.note else ""
        head = f"{self.details}\nLast lines of {excerpt.step}{said}:"
        room, tail = DETAILS_MAX - len(head), []
        for line in reversed(excerpt.lines):
            if room < len(line) + 1:
                break
            tail.append(line)
            room -= len(line) + 1
        details = "\n".join([_clip(head, DETAILS_MAX), *reversed(tail)])
        return replace(self, details=details, annotations=annotations)

    @property
    def shared(self) -> dict[str, str]:
        """The fields both sites spell alike."""
        return {"title": self.title, "details": self.details, "reporter": REPORTER, "link": self.link}


def report_of(build: Mapping[str, Any], status: CommitStatus) -> Report:
    """What a reviewer reads first about a finished build: the outcome and duration, the step that failed
    and why, what the steps did, the warnings, the trigger, the link to the log; clipped, one line each."""
    steps = steps_of(build)
    failure = _dict(build.get("failureInfo"))
    secrets = substituted_secrets(build)
    cause = masked(_text(failure.get("detail")) or _text(build.get("statusDetail")), secrets)
    warnings = [w for w in build.get("warnings") or () if isinstance(w, dict)] if isinstance(
        build.get("warnings"), list
    ) else []  # fmt: skip
    lines = [status.description]
    if steps.failed_step:
        lines.append(f"Failed step: {steps.failed_step}")
    if cause and status.state == "FAILED":
        kind = _text(failure.get("type")).replace("_", " ").lower()
        lines.append(f"Cause{f' ({kind})' if kind else ''}: {cause}")
    if steps.total:
        counts = [f"{steps.passed} passed", f"{steps.failed} failed", f"{steps.allowed} allowed to fail",
                  f"{steps.not_run} did not run"]  # fmt: skip
        lines.append(f"Steps: {steps.total} ({', '.join(c for c in counts if not c.startswith('0 '))})")
    for warning in warnings[:WARNINGS_SHOWN]:
        lines.append(f"Warning: {_clip(plain(masked(_text(warning.get('text')), secrets)), FIELD_MAX)}")
    if len(warnings) > WARNINGS_SHOWN:
        lines.append(f"and {len(warnings) - WARNINGS_SHOWN} more warnings")
    trigger = trigger_name(build)
    if trigger:
        lines.append(f"Trigger: {trigger}")
    details = "\n".join(_clip(plain(line), LINE_MAX) for line in lines)  # 9 lines at most: within DETAILS_MAX
    return Report(
        key=f"{REPORT_PREFIX}{status.key}",
        server_key=REPORT_PREFIX + hashed_key(status.server_key, SERVER_KEY_MAX - len(REPORT_PREFIX)),
        title=_clip(plain(f"{trigger or DEFAULT_NAME}: {status.description}"), TITLE_MAX),
        details=_clip(details, DETAILS_MAX),
        passed=status.state == "SUCCESSFUL",
        link=status.url,
        duration_ms=status.duration_ms,
        steps=steps,
        trigger=_clip(plain(trigger), FIELD_MAX),
        warnings=len(warnings),
        log=failed_step(build),
        masks=secrets,
    )


REPORT_FIELDS_MAX = 6  # Data Center's limit (Cloud's is 10): the last fields give way


def report_fields(report: Report, link_text: str) -> list[dict[str, Any]]:
    """The data fields a reviewer scans first, at most REPORT_FIELDS_MAX (with test results, the steps' count or
    the warnings give way); the sites name a link's text differently (`link_text`)."""
    fields: list[dict[str, Any]] = []
    if report.duration_ms is not None:
        fields.append({"title": "Duration", "type": "DURATION", "value": report.duration_ms})
    if report.steps.failed_step:
        fields.append({"title": "Failed step", "type": "TEXT", "value": _clip(report.steps.failed_step, FIELD_MAX)})
    if report.tests:
        fields.append({"title": "Tests", "type": "TEXT", "value": report.tests})
    if report.steps.total:
        fields.append(
            {"title": "Steps passed", "type": "TEXT", "value": f"{report.steps.passed} of {report.steps.total}"}
        )
    if report.trigger:
        fields.append({"title": "Trigger", "type": "TEXT", "value": report.trigger})
    fields.append({"title": "Build log", "type": "LINK", "value": {link_text: "Cloud Build log", "href": report.link}})
    if report.warnings:
        fields.append({"title": "Warnings", "type": "NUMBER", "value": report.warnings})
    return fields[:REPORT_FIELDS_MAX]


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
    path = LOG_PATH_RE.fullmatch(parts.path)
    project = PROJECT_PARAMETER_RE.search(parts.query)
    if parts.scheme != "https" or parts.hostname != "console.cloud.google.com" or not path or not project:
        return None
    return BuildRef(project["project"], path["region"] or "global", path["id"])


# --- Translation: a failed step's log (pure) -----------------------------------

LOG_LINE_MAX = 200  # a log line as a report shows it
LOG_LINES_SCANNED = 1000  # of the failed step's last lines, read and searched for errors
ANNOTATIONS_MAX = 100  # a report's annotations: one request on Cloud (its limit per request)
SUMMARY_MAX = 440  # Cloud refuses an annotation's summary over 450 characters
BUILD_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}", re.ASCII)
FAILED_STEP_RE = re.compile(r"\bbuild step (\d{1,4})\b", re.IGNORECASE)  # failureInfo's detail names the step
STEP_PREFIX_RE = re.compile(r'Step #\d{1,4}(?: - "[^"\n]*")?: ')  # a line of the log file names its step
ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
KEY_BLOCK_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
KEY_BLOCK_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
# A line within a private key block: base64, or one of the PEM headers (an encrypted key's).
KEY_BLOCK_LINE = re.compile(r"\s*+(?:[A-Za-z0-9+/=.]++|(?:Proc-Type|DEK-Info|Comment):.*+)?\s*+")
MASKED = "[masked]"
MASK_WINDOW = 512  # of a text from a build, what is cleaned and masked: past it nothing is shown (200 of a line)
SECRET_MIN = 6  # a known secret shorter than this is not looked for (it would mask ordinary words)
# What a credential looks like, as secret scanners (gitleaks, GitHub's secret scanning) describe each kind; a
# match is masked before any text leaves Google Cloud. Every shape is linear in its text: each unbounded run either
# ends the match or starts only where a run of its characters starts (a lookbehind), so no text makes the engine
# scan it again from each position. Kept as text: `re` compiles each on first use, so `import main` stays cheap.
TOKEN_SHAPES = (  # masked whole, in one pass a text
    r"\bATATT[A-Za-z0-9_=+/-]{16,}+",  # Atlassian API token
    r"\bATCTT[A-Za-z0-9_=+/-]{16,}+",  # Bitbucket repository, project and workspace access tokens
    r"\bATBB[A-Za-z0-9]{16,}+",  # Bitbucket app password
    r"\b[MNO][A-Za-z0-9+/]{42,43}=?(?![A-Za-z0-9+/])",  # Bitbucket Data Center HTTP access token (base64)
    r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}+|github_pat_[A-Za-z0-9_]{22,}+)",  # GitHub
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key ID
    r"\bAIza[0-9A-Za-z_-]{35}",  # Google API key
    r"\bya29\.[0-9A-Za-z_.-]{10,}+",  # Google OAuth access token
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}+",  # Slack
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]*+",  # a JSON Web Token
    # a private key within one text (an escaped PEM in JSON, a test's message), to its end or the text's
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?s:(?!-----END ).)*+"
    r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?",
)
# One pass: a position that cannot start any of them is passed over at once.
TOKEN_SHAPE = "(?=[AMNOgyxe-])(?:" + "|".join(f"(?:{shape})" for shape in TOKEN_SHAPES) + ")"
# The words that make a name a secret's (API_KEY, "password", --token), and a URL's parameter's (?key=, &sig=).
SECRET_WORDS = r"(?i:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)"  # noqa: S105
PARAMETER_WORDS = r"(?i:password|passwd|secret|token|key|sig|credential|auth)"
SECRET_NAME = rf"(?<![\w.-])(?=[\w.-]*?{SECRET_WORDS})[\w.-]++"  # a name holding one: linear, from where it starts
# The shapes of which only a part is masked: what follows the group `keep`. Each row is tried only on a text its gate
# is found in: most lines hold none, and none is matched for nothing.
VALUE_SHAPES = (  # (gate, shape)
    (r"(?i)bearer", r"(?P<keep>(?i:\bbearer)\s++)[A-Za-z0-9._~+/=-]{8,}+"),
    (
        r"(?i)authori[sz]ation",
        r"(?i)(?P<keep>\b(?:proxy-)?authori[sz]ation[\"']?\s*+[:=]\s*+[\"']?"
        r"(?:(?:basic|bearer|digest|token|negotiate)\s++)?)[^\s\"',;]{4,}+",
    ),  # Authorization: Basic dXNlcjpwYXNz
    (r"(?i)cookie", r"(?i)(?P<keep>\b(?:set-)?cookie[\"']?\s*+:\s*+[\"']?)[^\"'\r\n]{4,}+"),  # Cookie: ...; the rest
    ("://", r"(?P<keep>(?<=://))(?!git@)[^\s/?#\"']+(?=@)"),  # user info in a URL: user:password@, TOKEN@, p@ss@
    ("=", rf"(?P<keep>[?&;#](?=[\w.-]*?{PARAMETER_WORDS})[\w.-]++=)[^&#\s\"'<>]++"),  # ?access_token=, ?key=, ?sig=
    (SECRET_WORDS, rf"(?P<keep>{SECRET_NAME}[\"']?\s*+[=:]\s*+\")[^\"]{{4,}}+"),  # "password": "...", token="..."
    (SECRET_WORDS, rf"(?P<keep>{SECRET_NAME}[\"']?\s*+[=:]\s*+')[^']{{4,}}+"),
    (SECRET_WORDS, rf"(?P<keep>{SECRET_NAME}[\"']?\s*+[=:]\s*+)[^\s\"',;]{{4,}}+"),  # API_KEY=..., password: ...
    (
        SECRET_WORDS,
        rf"(?P<keep>(?<!\S)--(?=[\w-]*?{SECRET_WORDS})[\w-]++\s++)"
        r"(?:\"[^\"]*+\"?|'[^']*+'?|[^\s\"'-][^\s\"']*+)",
    ),  # --password X
    ("-u", r"(?P<keep>(?<!\S)(?:-u|--user)(?:\s++|=)?[\"']?[^\s:\"']++:)[^\s\"']++"),  # curl -u user:password
    (
        r"(?<!\S)(?:-u|--user(?:name)?)(?:\s|=)|\blogin\b|\bsshpass\b",  # -p X is a password on a line that signs in
        r"(?P<keep>(?<!\S)(?:sshpass\s++)?-p(?:\s++)?)[^\s\"'-][^\s\"']*+",
    ),  # docker login -u x -p X, mysql -pX
)


@dataclass(frozen=True)
class FailedStep:
    """The step whose lines tell why a build failed, as Cloud Logging labels them."""

    build_id: str
    index: int  # Cloud Build's "Step #N"
    step_id: str
    directory: str  # the step's `dir`, where its relative paths start (relative to /workspace)

    @property
    def label(self) -> str:
        """Its lines' `labels.build_step`: `Step #N - "id"`, or `Step #N` for a step without an id."""
        return f'Step #{self.index} - "{self.step_id}"' if self.step_id else f"Step #{self.index}"


def failed_step(build: Mapping[str, Any]) -> FailedStep | str | None:
    """The step of a failed build whose log a report shows; a reason when its log cannot be read; None for a build
    that did not fail in a step."""
    meaning = meaning_of(build)
    if meaning is None or meaning.state != "FAILED" or not BUILD_ID_RE.fullmatch(_text(build.get("id"))):
        return None
    steps = [s if isinstance(s, dict) else {} for s in build.get("steps") or ()] if isinstance(
        build.get("steps"), list
    ) else []  # fmt: skip
    index = steps_of(build).failed_index
    if index < 0 and (named := FAILED_STEP_RE.search(_text(_dict(build.get("failureInfo")).get("detail")))):
        index = int(named[1])
    if not 0 <= index < len(steps):
        return None
    logging = _text(_dict(build.get("options")).get("logging"))
    if logging == "NONE":
        return "the build's logging is NONE"
    if logging == "GCS_ONLY":
        return "the build writes its log only to its logs bucket (options.logging GCS_ONLY)"
    step_id, directory = _text(steps[index].get("id")), _text(steps[index].get("dir"))
    if not (step_id.isprintable() and directory.isprintable()):
        return "the failed step's id is not plain text"
    return FailedStep(_text(build["id"]), index, step_id, directory)


def log_filter(project: str, step: FailedStep) -> str:
    """Cloud Logging's filter for the step's lines and Cloud Build's own (MAIN: its last line says the log is
    complete); every value quoted, so none can change the query."""
    return (
        f'logName={quoted(f"projects/{project}/logs/cloudbuild")} AND resource.type="build" '
        f"AND resource.labels.build_id={quoted(step.build_id)} "
        f'AND (labels.build_step={quoted(step.label)} OR labels.build_step="MAIN")'
    )


def quoted(text: str) -> str:
    """A string in Cloud Logging's query language."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def clean_lines(lines: Iterable[str], secrets: Iterable[str] = ()) -> list[str]:
    """Log lines as they may leave Google Cloud: each clipped to MASK_WINDOW first, terminal escape sequences and
    control and format characters removed (a tab is spaces), private key blocks removed, the function's own
    credentials and anything shaped like a credential masked, each line clipped to LOG_LINE_MAX."""
    known = known_secrets(secrets)
    cleaned: list[str] = []
    in_key = False
    for raw in lines:
        text = ANSI_RE.sub("", raw[:MASK_WINDOW]).replace("\t", "    ")
        if not text.isprintable():
            text = "".join(c for c in text if c.isprintable())
        if in_key and not (KEY_BLOCK_LINE.fullmatch(text) or KEY_BLOCK_END.search(text)):
            in_key = False  # an unterminated block ends where its base64 does: the lines after it are kept
        if in_key or KEY_BLOCK_BEGIN.search(text):
            in_key = not KEY_BLOCK_END.search(text)
            if not cleaned or cleaned[-1] != "[private key removed]":
                cleaned.append("[private key removed]")
            continue
        cleaned.append(_clip(_masked(text, known).rstrip(), LOG_LINE_MAX))
    return cleaned


def masked(text: str, secrets: Iterable[str] = ()) -> str:
    """Text from a build as it may leave Google Cloud: clipped to MASK_WINDOW, the function's own credentials
    (`secrets`, and their URL-encoded forms) and anything shaped like a credential masked."""
    return _masked(text[:MASK_WINDOW], known_secrets(secrets))


def known_secrets(secrets: Iterable[str]) -> list[str]:
    """Secrets as text may show them (as they are, and URL-encoded), longest first: a secret that holds another
    is masked whole."""
    from urllib.parse import quote, quote_plus

    forms = {form for s in secrets if len(s) >= SECRET_MIN for form in (s, quote(s, safe=""), quote_plus(s))}
    return sorted(forms, key=len, reverse=True)


def _masked(text: str, known: Sequence[str]) -> str:
    text = re.sub(TOKEN_SHAPE, MASKED, _masked_known(text, known))
    for gate, shape in VALUE_SHAPES:
        if re.search(gate, text):
            text = re.sub(shape, rf"\g<keep>{MASKED}", text)
    return text


def scrubbed(value: Any, known: Sequence[str]) -> Any:
    """A JSON value with every `known` secret masked in each of its strings: the last guard before a body leaves."""
    if isinstance(value, str):
        return _masked_known(value, known)
    if isinstance(value, dict):
        return {key: scrubbed(item, known) for key, item in value.items()}
    if isinstance(value, list):
        return [scrubbed(item, known) for item in value]
    return value


def _masked_known(text: str, known: Sequence[str]) -> str:
    for secret in known:
        text = text.replace(secret, MASKED)
    return text


@dataclass(frozen=True)
class Matcher:
    """One tool's error lines: `pattern` names a file, line (and column), severity and message on one line (its
    groups path, line, column, severity, message, code); `before` or `after`, when set, fill what it lacks from
    the nearest line above or below that they match (Rust and Terraform name the error above its location, a
    Python traceback below), short of a line that `stop` matches (where another failure's lines begin)."""

    tool: str
    pattern: str  # compiled by `re` on first use, and cached
    before: str | None = None
    after: str | None = None
    stop: str | None = None
    needs_context: bool = True  # a location without its `before` or `after` line is not an error of this tool
    names_file_alone: bool = False  # a file named without a directory cannot be placed (go test: its package's)


PATH = r"(?P<path>(?:file://)?[^\s:()\[\]\"'`]+)"
LINE_COLUMN = r"(?P<line>\d+)(?::(?P<column>\d+))?"
# One row per tool, the first that matches a line wins. Each row's format comes from the tool's real output (where
# this machine runs the tool) or its documentation: tests/data/logs/README.md says which, and test_log_lines.py
# proves each row on those lines.
MATCHERS = (
    Matcher("pytest", (rf"^{PATH[:-1]}\.py):(?P<line>\d+): (?P<message>[A-Za-z_][\w.]*)$"),
            before=(r"^E\s+(?P<message>(?:[\w.]*(?:Error|Exception|Failed)\b|assert\b).*)$"), needs_context=False,
            stop=r"^_{3,} \S.* _{3,}$"),  # each failure's section begins `____ test_name ____`
    Matcher("pytest summary", (rf"^(?:FAILED|ERROR) {PATH[:-1]}\.py)::(?P<test>\S+)(?: - (?P<message>.+))?$")),
    Matcher("Python traceback", (r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)'),
            after=(r"^(?P<message>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b.*)$")),
    Matcher("tsc", (rf"^{PATH}\((?P<line>\d+),(?P<column>\d+)\): (?P<severity>error|warning) "
                      r"(?P<code>TS\d+): (?P<message>.+)$")),
    Matcher("ESLint (unix)", (rf"^{PATH}:{LINE_COLUMN}: (?P<message>.+?) \[(?P<severity>Error|Warning)"
                                r"(?:/(?P<code>[^\]]+))?\]$")),
    Matcher("ESLint (stylish)", (r"^\s+(?P<line>\d+):(?P<column>\d+)\s+(?P<severity>error|warning)\s+"
                                   r"(?P<message>.+?)(?:\s{2,}(?P<code>[\w@/-]+))?$"),
            before=(r"^(?P<path>/?[\w.@-][^\s:]*\.[cm]?[jt]sx?)$")),
    Matcher("go test", (rf"^\s+{PATH[:-1]}_test\.go):(?P<line>\d+): (?P<message>.+)$"), names_file_alone=True),
    Matcher("rustc and cargo", (rf"^\s*--> {PATH}:{LINE_COLUMN}$"),
            before=(r"^(?P<severity>error|warning)(?:\[(?P<code>E\d+)\])?: (?P<message>.+)$")),
    Matcher("Maven", (rf"^\[(?P<severity>ERROR|WARNING)\] {PATH[:-1]}\.(?:java|kt|scala|groovy)):"
                        r"\[(?P<line>\d+),(?P<column>\d+)\] (?P<message>.+)$")),
    Matcher("Kotlin (Gradle)", (rf"^(?P<severity>e|w): {PATH[:-1]}\.kts?):(?P<line>\d+):(?P<column>\d+) "
                                  r"(?P<message>.+)$")),
    Matcher("Jest", (rf"^\s+at (?:[^()]*? \()?{PATH[:-1]}\.[cm]?[jt]sx?):(?P<line>\d+):(?P<column>\d+)\)?$"),
            before=(r"^\s*\u25cf (?P<message>.+)$")),
    Matcher("Terraform", (r"^(?:\u2502 )?\s*on (?P<path>[^\s]+\.tf(?:\.json)?) line (?P<line>\d+)"),
            before=(r"^(?:\u2502 )?(?P<severity>Error|Warning): (?P<message>.+)$")),
    # GCC, Clang, javac, go vet and go build, mypy, and any tool that writes `path:line:col: error: message`
    Matcher("compiler (path:line:col)", (rf"^{PATH}:{LINE_COLUMN}: (?:(?P<severity>fatal error|error|warning"
                                           r"|note)(?:\[[^\]]*\])?: )?(?P<message>\S.*)$")),
)  # fmt: skip
SEVERITIES = {"error": "error", "fatal error": "error", "e": "error", "warning": "warning", "w": "warning"}
NEARBY = 40  # how far above or below a location its message may be


@dataclass(frozen=True)
class Annotation:
    """A message pinned to a file and line of the repository (or to none: the report's own)."""

    path: str | None
    line: int | None
    severity: str  # "error" or "warning"
    message: str
    tool: str

    @property
    def site_severity(self) -> str:
        """As both sites name it (Cloud has CRITICAL and LOW too; Data Center LOW)."""
        return "HIGH" if self.severity == "error" else "MEDIUM"

    def place(self) -> dict[str, Any]:
        """Its file and line, as both sites' bodies spell them (none for the report's own)."""
        return {name: value for name, value in (("path", self.path), ("line", self.line)) if value}

    @property
    def key(self) -> str:
        """A stable id within its report (both sites take an external id)."""
        raw = f"{self.path}:{self.line}:{self.message}".encode("utf-8", "surrogatepass")
        return hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:32]


def merged(*groups: Iterable[Annotation]) -> tuple[Annotation, ...]:
    """Annotations of several sources, one per file and line (the first one found), a file's own only where none
    of its lines has one, errors first (in the order found otherwise), at most ANNOTATIONS_MAX."""
    found: dict[tuple[str | None, int | None], Annotation] = {}
    for annotation in (a for group in groups for a in group):
        if annotation.path is None:
            found[(None, len(found))] = annotation  # the report's own: each its own
        else:
            found.setdefault((annotation.path, annotation.line), annotation)
    lined = {a.path for a in found.values() if a.line is not None}
    kept = [a for a in found.values() if a.path is None or a.line is not None or a.path not in lined]
    kept.sort(key=lambda a: a.severity != "error")
    return tuple(kept[:ANNOTATIONS_MAX])


def annotations_from(lines: Sequence[str], directory: str) -> tuple[Annotation, ...]:
    """The errors the matchers find in a failed step's (cleaned) lines, on the repository's paths: one per file and
    line, a file's own only where none of its lines has one, errors first, at most ANNOTATIONS_MAX."""
    found = []
    for index, text in enumerate(lines):
        match, matcher = next(((m, row) for row in MATCHERS if (m := re.search(row.pattern, text))), (None, None))
        if match is not None and matcher is not None:
            found.append(_annotation(matcher, match, lines, index, directory))
    return merged(a for a in found if a is not None)


def _annotation(
    matcher: Matcher, match: re.Match[str], lines: Sequence[str], index: int, directory: str
) -> Annotation | None:
    fields = {k: v for k, v in match.groupdict().items() if v}
    for pattern, nearby in ((matcher.before, reversed(lines[max(0, index - NEARBY) : index])),
                            (matcher.after, lines[index + 1 : index + 1 + NEARBY])):  # fmt: skip
        if pattern is None:
            continue
        own = itertools.takewhile(lambda line: matcher.stop is None or not re.search(matcher.stop, line), nearby)
        near = next((m for m in (re.search(pattern, line) for line in own) if m), None)
        if near is None and matcher.needs_context:
            return None
        if near is not None:
            fields.update({k: v for k, v in near.groupdict().items() if v})  # the context says it more fully
    severity = SEVERITIES.get(fields.get("severity", "error").lower())
    if matcher.names_file_alone and "/" not in fields["path"]:  # said in the message, placed nowhere
        fields["message"] = f"{fields.pop('path')}:{fields.pop('line')}: {fields.get('message', '')}"
    path = repository_path(fields["path"], directory) if "path" in fields else None
    if severity is None or ("path" in fields and path is None):
        return None  # a note, or a file outside the repository
    line = int(fields["line"]) if fields.get("line", "0").isdigit() and int(fields.get("line", "0")) > 0 else None
    message = fields.get("message") or fields.get("code") or "error"
    if fields.get("test"):
        message = f"{fields['test']}: {message}"
    if fields.get("code") and fields["code"] not in message:
        message = f"{message} ({fields['code']})"
    return Annotation(path, line, severity, _clip(plain(message), SUMMARY_MAX), matcher.tool)


def repository_path(path: str, directory: str) -> str | None:
    """A path a tool printed, as the repository names it: /workspace/ is the repository's root, a relative path
    starts in the step's `dir`; None for anything outside the repository (another absolute path, `..` past the
    root), under node_modules, or longer than PATH_MAX once joined to the step's `dir`."""
    path = path.removeprefix("file://")
    if len(path) > PATH_MAX or "\\" in path or not path.isprintable() or not FILE_NAME_RE.search(path):
        return None
    if posixpath.isabs(path):
        relative = path.removeprefix(WORKSPACE) if path.startswith(WORKSPACE) else None
    elif posixpath.isabs(directory):  # a step's dir may be absolute: only /workspace/... is in the repository
        relative = posixpath.join(directory.removeprefix(WORKSPACE), path) if directory.startswith(WORKSPACE) else None
    else:
        relative = posixpath.join(directory, path)
    if relative is None:
        return None
    normalized = posixpath.normpath(relative)
    if normalized in (".", "") or normalized.startswith(("..", "/")) or "node_modules" in normalized.split("/"):
        return None
    return normalized if len(normalized) <= PATH_MAX else None  # a step's `dir` is joined in: bounded after


WORKSPACE = "/workspace/"  # where Cloud Build checks the repository out
PATH_MAX = 1000  # an annotation's path
# A file's name: with an extension of letters (not a host's port, an address or a time), or a build file's name.
FILE_NAME_RE = re.compile(r"(?:^|/)(?:[^/]*\.[A-Za-z][A-Za-z0-9]{0,9}|Dockerfile|Makefile|Jenkinsfile)$")


@dataclass(frozen=True)
class Excerpt:
    """What a report shows of a failed step's log: its last lines, the errors found in them, or why there are
    none."""

    step: str = ""  # the step, as a reviewer reads it
    lines: tuple[str, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    note: str = ""  # "the log may be incomplete ...", "no log excerpt: ..."


def excerpt_of(step: FailedStep, lines: Sequence[str], complete: bool, shown: int, secrets: Iterable[str]) -> Excerpt:
    cleaned = clean_lines(lines[-LOG_LINES_SCANNED:], secrets)
    name = f"step {step.index} ({step.step_id})" if step.step_id else f"step {step.index}"
    note = "" if complete else "the log may be incomplete: Cloud Build's last line was not in Cloud Logging yet"
    if not cleaned:
        note = f"Cloud Logging had no line of {name}{'' if complete else ' yet'}"
    return Excerpt(name, tuple(cleaned[-shown:] if shown > 0 else ()), annotations_from(cleaned, step.directory), note)


# --- Translation: test results (pure) -------------------------------------------

TEST_REPORTS_SUBSTITUTION = "_BITBUCKET_TEST_REPORTS"
GCS_URL_RE = re.compile(
    r"gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])/(?P<name>[^#\s]*+)(?:#(?P<generation>\d{1,20}))?"
)
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", re.ASCII)
TEST_FILES_MAX = 50
TEST_FILE_BYTES_MAX = 5 * 1024 * 1024
TEST_BYTES_MAX = 20 * 1024 * 1024
FAILED_TESTS_SHOWN = 5  # in the report's details
JUNIT_DEPTH_MAX = 1000  # elements open at once in a JUnit file (its suites nest a few levels): each is held
JUNIT_NAMES_MAX = 1000  # distinct element, attribute and namespace names in a file (JUnit's dialects use a few dozen)
JUNIT_CHUNK = 64 * 1024  # what the parser is given at a time
JUNIT_BATCH = 1024  # ended elements taken out of their parent at once (one at a time moves all after it, each time)
JUNIT_ATTRIBUTES_MAX = 1000  # in one start tag: the parser holds each as two strings and a dict entry (~25x its bytes)
JUNIT_LONG_TAG_RE = re.compile(r"<[^\s<>!?/][^<>]{65535,}+")  # a start tag of 64 KB or more: its attributes counted
JUNIT_ATTRIBUTE_RE = re.compile(r"[\"']\s++[^\s=<>\"']++\s*+=\s*+[\"']")  # an attribute after another's value
FAILURE_TEXT_SCANNED = 16 * 1024  # of a failure's text (up to 5 MB), the first and the last characters searched
TEST_TEXT_MASKED = 4 * FIELD_MAX  # of a test's name or message, what is masked before it is clipped to FIELD_MAX
# A place in a failure's text: a path that starts where a word starts (so a long word is tried once, not from each
# of its characters) and is taken whole (possessive), then a line number of at most 9 digits.
FAILURE_PLACE_RE = re.compile(r"(?<![^\s:\"'()\[\]])(?P<path>[^\s:\"'()\[\]]++):(?P<line>\d{1,9})(?!\d)")


@dataclass(frozen=True)
class TestSources:
    """Where a build's JUnit files are, as far as the rule lets a build name them: a folder of its own (whose path
    holds the build's id) and, for a passing build, Cloud Build's artifact manifest for it (artifacts-<id>.json)."""

    build_id: str
    folder: tuple[str, str] | None = None  # (bucket, prefix) of _BITBUCKET_TEST_REPORTS
    manifest: tuple[str, str] | None = None  # (bucket, object) of results.artifactManifest
    refused: str = ""  # why a place the build names is not read


def test_sources(build: Mapping[str, Any]) -> TestSources | None:
    """The build's test report files' places, or None for a build that names none (or is not finished). A build
    reads only what is its own: a folder whose path holds its id as a whole segment (gs://BUCKET/PREFIX/$BUILD_ID/),
    and the manifest Cloud Build wrote for it; which buckets a project's builds may name is the deployment's."""
    meaning = meaning_of(build)
    build_id = _text(build.get("id"))
    if meaning is None or meaning.phase != FINAL or not BUILD_ID_RE.fullmatch(build_id):
        return None
    named = GCS_URL_RE.fullmatch(_text(substitutions(build).get(TEST_REPORTS_SUBSTITUTION)))
    manifest = GCS_URL_RE.fullmatch(_text(_dict(build.get("results")).get("artifactManifest")))
    folder, listed, refused = None, None, []
    if named:
        prefix = named["name"] + ("/" if named["name"].rpartition("/")[2] == build_id else "")
        if build_id in prefix.split("/")[:-1]:
            folder = (named["bucket"], prefix)
        else:
            refused.append(f"{TEST_REPORTS_SUBSTITUTION} must name a folder of the build's own, whose path holds its "
                           "id (gs://BUCKET/PREFIX/$BUILD_ID/)")  # fmt: skip
    # Cloud Build uploads artifacts, and writes their manifest, only when every step succeeded
    if manifest and meaning.state == "SUCCESSFUL":
        if manifest["name"].rpartition("/")[2] == f"artifacts-{build_id}.json":
            listed = (manifest["bucket"], manifest["name"])
        else:
            refused.append("its artifact manifest is not the one Cloud Build writes for it (artifacts-$BUILD_ID.json)")
    if not (folder or listed or refused):
        return None
    return TestSources(build_id, folder, listed, "; ".join(refused))


def manifest_files(text: str, manifest: tuple[str, str]) -> list[tuple[str, str, str]]:
    """The (bucket, object, generation) of the XML files an artifact manifest lists (one JSON object a line): only
    what Cloud Build uploaded beside it (its bucket, under its folder), each at the generation the line names; at
    most one more than TEST_FILES_MAX."""
    bucket, name = manifest
    folder = name.rpartition("/")[0] + "/" if "/" in name else ""
    found: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        try:
            location = _text(_dict(json.loads(line)).get("location"))
        except (ValueError, RecursionError):
            continue
        place = GCS_URL_RE.fullmatch(location)
        if place and place["bucket"] == bucket and place["name"].startswith(folder) and place["generation"]:
            found += [(bucket, place["name"], place["generation"])] if place["name"].endswith(".xml") else []
        if len(found) > TEST_FILES_MAX:
            break
    return found


@dataclass(frozen=True)
class FailedTest:
    """A failed test as a report shows it: its name (classname.name) and message, plain, masked and clipped, and
    the place of its annotation (no path: the report's own)."""

    name: str
    message: str
    path: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class TestResults:
    """What a report shows of a build's JUnit files, and no more: the counts, and of the failed tests the first
    FAILED_TESTS_SHOWN (its details) and the first at each other place (its annotations, at most ANNOTATIONS_MAX)."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: tuple[FailedTest, ...] = ()
    partial: bool = False  # a bound was reached, or a file could not be read

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped

    def __add__(self, other: TestResults) -> TestResults:
        return TestResults(self.passed + other.passed, self.failed + other.failed, self.skipped + other.skipped,
                           kept_failures(self.failures + other.failures), self.partial or other.partial)  # fmt: skip

    def counts(self) -> str:
        """'2 of 215 tests failed', '213 tests passed (2 skipped)', '(partial)' when a bound was reached."""
        if self.failed:
            said = f"{self.failed} of {self.total} tests failed"
        else:
            said = f"{self.passed} tests passed" + (f" ({self.skipped} skipped)" if self.skipped else "")
        return said + (" (partial)" if self.partial else "")


def kept_failures(failures: Iterable[FailedTest]) -> tuple[FailedTest, ...]:
    """Of failed tests in order, those a report shows: the first FAILED_TESTS_SHOWN, then each at a place none
    before it has (a report's own annotation is each its own), at most ANNOTATIONS_MAX."""
    kept: list[FailedTest] = []
    places: set[tuple[str, int | None]] = set()
    for test in failures:
        if len(kept) >= ANNOTATIONS_MAX:
            break
        if _shows(test.path, test.line, len(kept), places):
            kept.append(test)
    return tuple(kept)


def _shows(path: str | None, line: int | None, kept: int, places: set[tuple[str, int | None]]) -> bool:
    """Whether a failed test at (path, line) is shown after `kept` others at `places` (which it joins)."""
    if path is not None:
        if kept >= FAILED_TESTS_SHOWN and (path, line) in places:
            return False
        places.add((path, line))
    return True


def parse_junit(data: bytes, directory: str = "", secrets: Iterable[str] = ()) -> TestResults:
    """One JUnit XML file (pytest xunit1 and xunit2, Maven Surefire and Failsafe, gotestsum, jest-junit; a
    <testsuites> root or a bare <testsuite>): its counts and what a report shows of its failed tests, placed in the
    repository (`directory`: the failed step's) with the function's own credentials (`secrets`) and anything shaped
    like a credential masked. Parsed with defusedxml, one test case at a time (junitparser reads each), so entity
    declarations and external entities are refused and a file costs a bounded multiple of its size; ValueError for
    a file that is not JUnit or not well-formed."""
    from junitparser import Error, Failure, Skipped, TestCase

    known = list(secrets)
    passed = failed = skipped = 0
    kept: list[FailedTest] = []
    places: set[tuple[str, int | None]] = set()
    for element in _junit_cases(data):
        case = TestCase.fromelem(element)  # type: ignore[no-untyped-call]  # junitparser ships no hints
        outcomes = case.result
        failure = next((r for r in outcomes if isinstance(r, (Failure, Error))), None)
        if failure is None:
            skipped, passed = (skipped + 1, passed) if any(isinstance(r, Skipped) for r in outcomes) else (
                skipped, passed + 1)  # fmt: skip
            continue
        failed += 1
        if len(kept) >= ANNOTATIONS_MAX:
            continue
        text = failure.text or ""
        path, line = failure_place(text, directory) or (None, None)
        if path is None and (file := element.get("file")) and (path := repository_path(file, directory)):
            line = _line_attribute(element.get("line"))  # pytest's xunit1: 0-based, the test function's `def`
        if _shows(path, line, len(kept), places):
            name = ".".join(p for p in (case.classname, case.name) if p)
            message = _failure_message(failure.message or "", text)
            kept.append(FailedTest(_shown_text(name, known), _shown_text(message, known), path, line))
    return TestResults(passed, failed, skipped, tuple(kept))


def _junit_cases(data: bytes) -> Iterator[Any]:
    """Each <testcase> of a JUnit file that junitparser counts (a child of a <testsuite> within the root), as it ends;
    dropped after. Only the open elements are held, and within a test case only its first <failure> or <error> and
    its first <skipped> (all that junitparser's result is read for); ValueError for a file that is not JUnit, not
    well-formed, nested deeper than JUNIT_DEPTH_MAX or with a start tag of more than JUNIT_ATTRIBUTES_MAX attributes."""
    import xml.etree.ElementTree

    import defusedxml.ElementTree
    from defusedxml import DefusedXmlException

    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        raise ValueError("it is UTF-16 (only files in UTF-8 or another 8-bit encoding are read)")
    syntax = data.decode("latin-1")  # each byte a character: the markup as expat reads it
    for tag in JUNIT_LONG_TAG_RE.finditer(syntax):  # rare: only there can attributes be many
        attributes = JUNIT_ATTRIBUTE_RE.finditer(syntax, tag.start(), tag.end())
        if next(itertools.islice(attributes, JUNIT_ATTRIBUTES_MAX, None), None) is not None:
            raise ValueError(f"a start tag holds more than {JUNIT_ATTRIBUTES_MAX} attributes")
    del syntax
    parser = defusedxml.ElementTree.DefusedXMLParser(target=xml.etree.ElementTree.TreeBuilder())
    events = defusedxml.ElementTree.iterparse(_Chunks(data), events=("start", "end", "start-ns"), parser=parser)
    names: set[Any] = set()  # element, attribute and namespace names: expat keeps each it meets until the file's end
    opened: list[Any] = []  # the open elements, the root first
    ended = [0]  # of each, how many of its first children have ended: cleared, and taken out of it in batches
    suites = 0  # how many of them, from the root, are suites junitparser reads (the root, then <testsuite>s)
    case = -1  # where in `opened` the test case being read is
    failure = skipped = None  # its first <failure> or <error>, and its first <skipped>: what its result reads
    while True:
        try:
            item = next(events, None)
        except (DefusedXmlException, SyntaxError, ValueError) as error:  # ParseError is a SyntaxError
            raise ValueError(type(error).__name__) from None
        if item is None:
            return
        event, element = item
        if event == "start-ns":
            names.add(element)  # (prefix, URI)
        elif event == "start":
            names.add(element.tag)
            names.update(element.attrib)
        if len(names) > JUNIT_NAMES_MAX:
            raise ValueError(f"it holds more than {JUNIT_NAMES_MAX} distinct names")
        if event == "start-ns":
            continue
        depth = len(opened)
        if event == "start":
            if depth >= JUNIT_DEPTH_MAX:
                raise ValueError(f"it nests elements more than {JUNIT_DEPTH_MAX} deep")
            if depth == 0 and element.tag not in ("testsuites", "testsuite"):
                raise ValueError(f"its root is <{_clip(str(element.tag), 40)}>, not <testsuites> or <testsuite>")
            if case >= 0:
                if failure is None and element.tag in ("failure", "error"):
                    failure = element
                elif skipped is None and element.tag == "skipped":
                    skipped = element
            elif suites == depth and (depth == 0 or element.tag == "testsuite"):
                suites += 1
            elif suites == depth and element.tag == "testcase" and opened[-1].tag == "testsuite":
                case = depth
            opened.append(element)
            ended.append(0)
            continue
        opened.pop()
        ended.pop()
        depth -= 1
        suites = min(suites, depth)
        if depth == case:
            del element[:]
            element.extend(r for r in (failure, skipped) if r is not None)
            yield element
            case, failure, skipped = -1, None, None
        if element is not failure and element is not skipped:
            element.clear()
        if depth > 0:
            ended[-1] += 1
            if ended[-1] >= JUNIT_BATCH:
                del opened[-1][: ended[-1]]
                ended[-1] = 0


class _Chunks:
    """A file's bytes as iterparse reads them, JUNIT_CHUNK at a time rather than its 16 KB: expat before 2.6 parses
    an unfinished token again from its start on every read, so a 5 MB attribute read in 16 KB reads costs seconds."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._data[self._at : self._at + JUNIT_CHUNK].tobytes()
        self._at += len(chunk)
        return chunk


def _line_attribute(raw: str | None) -> int | None:
    """A testcase's `line` (pytest's xunit1: 0-based) as a 1-based line; None unless it is a plain number."""
    return int(raw) + 1 if raw and len(raw) <= 9 and raw.isascii() and raw.isdigit() else None


def failure_place(text: str, directory: str) -> tuple[str, int] | None:
    """The last place (path:line, line above 0) in a failure's text that lies in the repository; of a long text only
    the first and last FAILURE_TEXT_SCANNED characters are searched."""
    if len(text) > 2 * FAILURE_TEXT_SCANNED:
        text = f"{text[:FAILURE_TEXT_SCANNED]}\n{text[-FAILURE_TEXT_SCANNED:]}"
    place = None
    for match in FAILURE_PLACE_RE.finditer(text):
        head, dot, extension = match["path"].rpartition(".")  # a file's: a letter, then up to 9 letters or digits
        named = head and dot and len(extension) <= 10 and extension[:1].isascii() and extension[:1].isalpha()
        line = int(match["line"])
        if named and all(c.isalnum() or c == "_" for c in extension) and line > 0:
            path = repository_path(match["path"], directory)
            place = (path, line) if path else place
    return place


def _failure_message(message: str, text: str) -> str:
    """A failure's own message, else (gotestsum says only "Failed") the first line of its text that says more."""
    message = message[:TEST_TEXT_MASKED].strip()
    if len(message) > len("Failed"):
        return message
    said = (line.strip() for line in text[:FAILURE_TEXT_SCANNED].splitlines())
    return next((line for line in said if line and not line.startswith(("=== ", "--- "))), message)


def _shown_text(text: str, secrets: list[str]) -> str:
    """A test's name or message as a report may show it: plain, the function's own credentials and anything shaped
    like a credential masked, clipped (masked before it is clipped, so no credential is cut in two)."""
    return _clip(masked(plain(text[:TEST_TEXT_MASKED]), secrets), FIELD_MAX)


def test_annotations(results: TestResults) -> list[Annotation]:
    """One annotation per failed test a report shows: at the place found for it (the last place in its failure's
    text that is in the repository, else its file and line attributes), else on no file (the report's own)."""
    return [Annotation(t.path, t.line, "error", _clip(f"{t.name}: {t.message}" if t.message else f"{t.name} failed",
                                                      SUMMARY_MAX), "JUnit") for t in results.failures]  # fmt: skip


def with_tests(update: Update, results: TestResults) -> Update:
    """The update with its test results: the counts end the status's description (on both sites) and ride on a
    server's status (testResults); the report names them and its first failed tests, and annotates them."""
    status = update.status
    head = status.description.partition(": ")[0] if results.failed else status.description
    status = replace(status, description=_clip(f"{head}: {results.counts()}", DESCRIPTION_MAX),
                     tests=(results.passed, results.failed, results.skipped))  # fmt: skip
    report = update.report
    if report is not None:
        shown = [f"{t.name}: {t.message}" if t.message else t.name for t in results.failures[:FAILED_TESTS_SHOWN]]
        lines = [f"Tests: {results.counts()}", *(f"Failed test: {_clip(s, LINE_MAX - 13)}" for s in shown)]
        report = replace(report, details=_clip("\n".join([report.details, *lines]), DETAILS_MAX),
                         tests=results.counts(), annotations=merged(test_annotations(results)))  # fmt: skip
    return replace(update, status=status, report=report)


# --- Credentials -------------------------------------------------------------


CONSUMER = "OAuth consumer"
SHAPES = (("Basic", ("username", "password")), (CONSUMER, ("client_id", "client_secret")), ("Bearer", ("token",)))
SHAPES_TEXT = '{"username": ..., "password": ...}, {"token": ...} or {"client_id": ..., "client_secret": ...}'
ENTRY_FIELDS = frozenset(
    {
        "username",
        "password",
        "client_id",
        "client_secret",
        "token",
        "repositories",
        "projects",
        "server",
        "ca_certificate",
    }
)
FIELD_NAME_RE = re.compile(r"[a-z_]{1,40}", re.ASCII)  # an unknown field is named only if it looks like a name
PATTERN_RE = re.compile(r"(?<![!-~])[!-~]+/[!-~]+", re.ASCII)  # workspace/repo_slug, or PROJECT/repo_slug on a server
PROJECT_PATTERN_RE = re.compile(r"[a-z0-9.:*?!\[\]-]{1,100}", re.ASCII)  # Google Cloud project IDs, shell-style


@dataclass(frozen=True)
class Credential:
    """One entry of the credentials document: a credential and the repositories it serves.
    repr never shows the secret."""

    position: int  # 1-based, how log lines and errors name the entry
    scheme: str  # "Basic", "Bearer", or CONSUMER (exchanged for a Bearer token)
    secret: str = field(repr=False)
    repositories: Patterns = field(default_factory=Patterns)  # none: every repository of its site
    server: str | None = None  # a Data Center server's base URL; None: Bitbucket Cloud
    ca_certificate: str | None = None  # PEM of the CA that signed the server's certificate
    projects: Patterns = field(default_factory=Patterns)  # the Google Cloud projects whose builds it serves; none: any

    def serves(self, repository: Repository, project: str = "") -> bool:
        if not self.on_site_of(repository) or not self.repositories.match(repository.full_name):
            return False
        return not self.projects or (bool(project) and self.projects.match(project))

    def on_site_of(self, repository: Repository) -> bool:
        """Whether this entry's site is the repository's (an SSH clone URL names only the host)."""
        if repository.ssh_host is not None:
            return self.server is not None and urlsplit(self.server).hostname == repository.ssh_host
        return self.server == repository.server

    def authorization(self) -> str:
        scheme = "Basic" if self.scheme == CONSUMER else self.scheme
        return f"{scheme} {self.secret}"


def parse_credentials(raw: str | bytes, where: str) -> tuple[Credential, ...]:
    """The credentials document: one credential object, or a JSON array of entries.
    Errors name `where` and the entry's position, never a value."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        data = None
    if isinstance(data, dict):
        return (_entry(data, 1, where),)
    if isinstance(data, list) and data:
        return tuple(_entry(item, n, f"entry {n} of {where}") for n, item in enumerate(data, 1))
    raise ConfigurationError(
        f"{where} does not hold Bitbucket credentials: expected JSON {SHAPES_TEXT}, "
        "or a non-empty array of such objects"
    )


def _entry(data: Any, position: int, where: str) -> Credential:
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where} is not a JSON object")
    unknown = sorted(set(data) - ENTRY_FIELDS)
    if unknown:
        shown = [repr(name) if FIELD_NAME_RE.fullmatch(name) else "(a field that is not a name)" for name in unknown]
        raise ConfigurationError(f"{where} has an unknown field: {', '.join(shown)}")
    nulls = sorted(name for name, value in data.items() if value is None)
    if nulls:  # a null is not an absent field: {"server": null} must not become a Bitbucket Cloud entry
        raise ConfigurationError(f"{where} has a null {', '.join(repr(n) for n in nulls)}: leave a field out instead")
    shapes = [(scheme, names) for scheme, names in SHAPES if any(name in data for name in names)]
    if len(shapes) != 1 or not _all_text(*(data.get(name) for name in shapes[0][1])):
        raise ConfigurationError(f"{where} does not hold Bitbucket credentials: expected exactly one of {SHAPES_TEXT}")
    scheme, names = shapes[0]
    server, ca_certificate = _site(data, scheme, where)
    if scheme == "Bearer":
        secret = data["token"]
        if not secret.isascii():  # an HTTP header cannot carry it (e.g. a pasted '…')
            raise ConfigurationError(f"{where} holds a token with a character outside ASCII")
    else:
        user, password = (data[name] for name in names)
        if ":" in user:
            raise ConfigurationError(f"{where} holds a {names[0]} with a ':', which HTTP Basic cannot carry")
        secret = base64.b64encode(f"{user}:{password}".encode()).decode()
    repositories, projects = _patterns(data, "repositories", where), _patterns(data, "projects", where)
    return Credential(position, scheme, secret, repositories, server, ca_certificate, projects)


def _site(data: Mapping[str, Any], scheme: str, where: str) -> tuple[str | None, str | None]:
    """A Data Center entry's server and CA certificate, checked; (None, None) for Bitbucket Cloud."""
    if "server" not in data:
        if "ca_certificate" in data:
            raise ConfigurationError(f'{where} has a "ca_certificate" but no "server"')
        return None, None
    server, ca = data["server"], data.get("ca_certificate")
    normalized = normalized_server(server) if isinstance(server, str) else None
    if normalized is None:
        raise ConfigurationError(f'{where} has a "server" that is not an https:// URL (plain http only on loopback)')
    if scheme == CONSUMER:
        raise ConfigurationError(f"{where} is an OAuth consumer, which only Bitbucket Cloud has, with a server")
    if ca is not None and not _is_certificate(ca):
        raise ConfigurationError(f'{where} has a "ca_certificate" that is not a PEM certificate')
    return normalized, ca


def _is_certificate(pem: Any) -> bool:
    import ssl

    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        return False
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError):
        return False
    return True


# The entry's lists of patterns: what each pattern must look like, and how an error names the list.
PATTERN_LISTS = {
    "repositories": (PATTERN_RE, '"workspace/repo_slug" patterns'),
    "projects": (PROJECT_PATTERN_RE, "project ID patterns"),
}


def _patterns(data: Mapping[str, Any], name: str, where: str) -> Patterns:
    if name not in data:
        return Patterns()
    value, (shape, what) = data[name], PATTERN_LISTS[name]
    if not isinstance(value, list) or not value or not all(isinstance(p, str) and shape.fullmatch(p) for p in value):
        raise ConfigurationError(f'{where} has "{name}" that are not a list of {what}')
    return Patterns(tuple(value))


def _all_text(*values: Any) -> bool:
    return all(isinstance(v, str) and v and v.isprintable() for v in values)


class CredentialSource(Protocol):
    def fetch(self) -> tuple[Credential, ...]: ...


class FileCredentials:
    """BITBUCKET_CREDENTIALS_FILE: a file, such as a secret Cloud Run mounts, which it reads from
    Secret Manager each time the file is read: a new version reaches warm instances, no client needed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fetch(self) -> tuple[Credential, ...]:
        where = f"BITBUCKET_CREDENTIALS_FILE ({self.path})"
        try:
            with open(self.path, "rb") as file:
                raw = file.read()
        except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as error:
            raise ConfigurationError(f"{where} cannot be read: {error.strerror}") from None
        except OSError as error:  # a mounted secret that Secret Manager could not serve this time
            raise TransientError(f"{where} cannot be read: {error.strerror or type(error).__name__}") from None
        return parse_credentials(raw, where)


class EnvironmentCredentials:
    """BITBUCKET_CREDENTIALS: the JSON itself (local runs, --set-secrets), read from the environment each time."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def fetch(self) -> tuple[Credential, ...]:
        return parse_credentials(self.env.get("BITBUCKET_CREDENTIALS", ""), "BITBUCKET_CREDENTIALS")


class SecretManagerCredentials:
    """CREDENTIALS_SECRET: a Secret Manager secret, its latest version unless one is named."""

    def __init__(self, secret: str, endpoint: str | None = None) -> None:
        self.secret = secret
        self.endpoint = endpoint
        self._client: Any = None

    def fetch(self) -> tuple[Credential, ...]:
        if self._client is None:
            from google.cloud import secretmanager

            options = {"api_endpoint": self.endpoint} if self.endpoint else None
            self._client = secretmanager.SecretManagerServiceClient(transport="rest", client_options=options)
        version = self.secret if "/versions/" in self.secret else f"{self.secret}/versions/latest"
        try:
            payload = self._client.access_secret_version(name=version, timeout=google_timeout()).payload.data
        except Exception as error:  # google.api_core errors, imported lazily
            raise _google_error(error, version) from None
        return parse_credentials(payload, f"{version} (CREDENTIALS_SECRET)")


@dataclass
class BucketCredentials:
    """A KMS-encrypted object in a bucket: the original function's design."""

    bucket: str
    blob: str
    key_id: str
    kms_endpoint: str | None = None
    _clients: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    def fetch(self) -> tuple[Credential, ...]:
        storage_client, kms_client = self._get_clients()
        where = f"gs://{self.bucket}/{self.blob}"
        try:
            blob = storage_client.bucket(self.bucket).blob(self.blob)
            ciphertext = blob.download_as_bytes(timeout=google_timeout())
            request = {"name": self.key_id, "ciphertext": ciphertext}
            plaintext = kms_client.decrypt(request=request, timeout=google_timeout()).plaintext
        except Exception as error:  # google.api_core errors, imported lazily
            raise _google_error(error, where) from None
        return parse_credentials(plaintext, f"{where} (decrypted with KMS_CRYPTO_KEY_ID)")

    def _get_clients(self) -> tuple[Any, Any]:
        if self._clients is None:
            from google.cloud import kms, storage  # type: ignore[attr-defined]  # storage ships no type hints

            options = {"api_endpoint": self.kms_endpoint} if self.kms_endpoint else None
            self._clients = (
                storage.Client(),
                kms.KeyManagementServiceClient(transport="rest", client_options=options),
            )
        return self._clients


def _google_error(error: Exception, where: str) -> Exception:
    code = getattr(error, "code", None)
    summary = f"{type(error).__name__}" + (f" {code}" if code else "")
    if code in (400, 403, 404):
        return ConfigurationError(f"reading credentials from {where} failed: {summary}: {error}")
    return TransientError(f"reading credentials from {where} failed: {summary}: {error}")


SINGLE_VARIABLES = ("BITBUCKET_CREDENTIALS_FILE", "BITBUCKET_CREDENTIALS", "CREDENTIALS_SECRET")
BUCKET_VARIABLES = ("SECRETS_BUCKET", "SECRETS_OBJECT", "KMS_CRYPTO_KEY_ID")
SECRET_RE = re.compile(r"projects/[^/]+/secrets/[^/]+(?:/versions/[^/]+)?", re.ASCII)


def credential_source(env: Mapping[str, str]) -> CredentialSource:
    """The one credential source the environment configures."""
    found = [v for v in (*SINGLE_VARIABLES, *BUCKET_VARIABLES) if env.get(v)]
    sources = {"BUCKET" if v in BUCKET_VARIABLES else v for v in found}
    if len(sources) > 1:
        raise ConfigurationError(f"configure exactly one credential source, found {', '.join(found)}")
    if "BITBUCKET_CREDENTIALS_FILE" in sources:
        return FileCredentials(env["BITBUCKET_CREDENTIALS_FILE"])
    if "BITBUCKET_CREDENTIALS" in sources:
        return EnvironmentCredentials(env)
    if "CREDENTIALS_SECRET" in sources:
        if not SECRET_RE.fullmatch(env["CREDENTIALS_SECRET"]):
            raise ConfigurationError(
                "CREDENTIALS_SECRET must be projects/PROJECT/secrets/SECRET, optionally with /versions/VERSION"
            )
        return SecretManagerCredentials(env["CREDENTIALS_SECRET"], env.get("SECRET_MANAGER_API_ENDPOINT"))
    if sources:
        missing = [v for v in BUCKET_VARIABLES if v not in found]
        if missing:
            raise ConfigurationError(f"the bucket credential source also needs {', '.join(missing)}")
        bucket, blob, key = (env[v] for v in BUCKET_VARIABLES)
        return BucketCredentials(bucket, blob, key, env.get("KMS_API_ENDPOINT"))
    raise ConfigurationError(
        "no Bitbucket credentials configured: set one of BITBUCKET_CREDENTIALS_FILE, BITBUCKET_CREDENTIALS, "
        "CREDENTIALS_SECRET, or SECRETS_BUCKET with SECRETS_OBJECT and KMS_CRYPTO_KEY_ID"
    )


@dataclass
class Keyring:
    """The credentials document, read from its source on the first event that needs it and again,
    once, when Bitbucket refuses one of its credentials (so a rotated entry reaches warm instances);
    and one OAuth token per consumer entry, kept until shortly before it expires."""

    SERVED_MEMORY = 4096  # repositories whose serving entry is remembered until the document is read again

    source: CredentialSource
    session: requests.Session
    token_url: str
    timeout: Any
    _entries: tuple[Credential, ...] | None = field(default=None, init=False)
    _served: dict[tuple[Repository, str], Credential | None] = field(default_factory=dict, init=False)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict, init=False)  # secret → (header, renew at)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)

    def load(self) -> tuple[Credential, ...]:
        """The document's entries, read from its source on first use (and after a credential was refused)."""
        with self._lock:
            if self._entries is None:
                self._entries = self.source.fetch()
                self._served = {}
            return self._entries

    def entry_for(self, repository: Repository) -> Credential | None:
        """The first entry that serves the repository, for the project the current event speaks for; reads the
        document on first use."""
        project = _project.get()
        with self._lock:
            entries = self.load()
            if (repository, project) not in self._served:
                if len(self._served) >= self.SERVED_MEMORY:
                    self._served.clear()
                entry = next((e for e in entries if e.serves(repository, project)), None)
                self._served[(repository, project)] = entry
            return self._served[(repository, project)]

    def sign(self, repository: Repository, refused: str | None = None) -> tuple[Credential, str]:
        """The entry serving the repository and its Authorization header. With `refused`, the header
        Bitbucket answered 401 to: the document is read again, unless another thread already did."""
        with self._lock:
            if refused is not None and refused in (self._cached_header(repository), *self._token_headers()):
                self._entries = None
                self._tokens = {k: v for k, v in self._tokens.items() if v[0] != refused}
            try:
                return self._sign(repository)
            except ConsumerRefused:  # the consumer's secret may have been rotated since it was read
                self._entries = None
                return self._sign(repository)

    def _sign(self, repository: Repository) -> tuple[Credential, str]:
        entry = self.entry_for(repository)
        if entry is None:
            raise NotServed(f"no entry of the credentials serves {repository.shown()} any more, so nothing is sent")
        if entry.scheme != CONSUMER:
            return entry, entry.authorization()
        token = self._tokens.get(entry.secret)
        if token is None or time.monotonic() >= token[1]:
            token = self._tokens[entry.secret] = self._exchange(entry)
        return entry, token[0]

    def _cached_header(self, repository: Repository) -> str | None:
        entry = self.entry_for(repository) if self._entries is not None else None
        return entry.authorization() if entry else None

    def _token_headers(self) -> list[str]:
        return [header for header, _ in self._tokens.values()]

    def secret_values(self) -> list[str]:
        """Every credential this instance holds, as text may show it: tokens, passwords, a consumer's secret and
        its OAuth tokens, and each Basic credential as sent (masked in a log line before it leaves)."""
        with self._lock:
            values = [header.partition(" ")[2] for header in self._token_headers()]
            for entry in self._entries or ():
                values.append(entry.secret)
                if entry.scheme != "Bearer":
                    values.append(base64.b64decode(entry.secret).decode("utf-8", "replace").partition(":")[2])
            return values

    def _exchange(self, consumer: Credential) -> tuple[str, float]:
        """The client-credentials grant: one token serves every event until it nearly expires."""
        response = send(
            self.session,
            "POST",
            self.token_url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": consumer.authorization()},
            timeout=self.timeout,
        )
        body = _json(response)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if response.status_code != 200 or not _all_text(token):
            reason = _text(body.get("error_description")) or _text(body.get("error")) or response.reason
            refused = ConsumerRefused if response.status_code in (400, 401) else TransientError
            raise refused(
                f"Bitbucket refused the OAuth consumer of credential entry {consumer.position}: "
                f"{response.status_code} {_clip(reason)}"
            )
        lifetime = float(lifetime) if isinstance(lifetime, (int, float)) and lifetime > 0 else 3600.0
        return f"Bearer {token}", time.monotonic() + lifetime - min(60.0, lifetime / 2)


# --- Sending a request ---------------------------------------------------------


def http_session(backoff_seconds: float, attempt_seconds: float, connections: int = 10) -> requests.Session:
    """One keep-alive session: 5xx answers and dropped connections retried with backoff, and a 429 or
    503 that carries Retry-After after that wait, each only while it fits in the event's deadline."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.exceptions import MaxRetryError, ResponseError
    from urllib3.util.retry import Retry

    class DeadlineRetry(Retry):
        """urllib3's Retry, except that no wait and no attempt may end past the event's deadline."""

        def increment(
            self,
            method: str | None = None,
            url: str | None = None,
            response: Any = None,
            error: Exception | None = None,
            _pool: Any = None,
            _stacktrace: Any = None,
        ) -> Self:
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
            wait = (response is not None and retry.get_retry_after(response)) or retry.get_backoff_time()
            if wait + attempt_seconds > time_left():
                raise MaxRetryError(_pool, url, error or ResponseError("no time left before the event's deadline"))
            return retry

    retry = DeadlineRetry(
        total=HTTP_RETRIES,
        backoff_factor=backoff_seconds,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST", "PUT", "DELETE"}),  # status writes are idempotent upserts
        raise_on_status=False,
    )
    session = requests.Session()
    for scheme in ("https://", "http://"):  # as many kept-alive connections as events at once
        session.mount(scheme, HTTPAdapter(max_retries=retry, pool_connections=connections, pool_maxsize=connections))
    return session


def send(
    session: requests.Session,
    method: str,
    url: str,
    timeout: tuple[float, float],
    verify: str | bool = True,
    **kwargs: Any,
) -> requests.Response:
    """Every request the function makes: TLS verified (against the CA file `verify` names, or the
    system's), ending by the event's deadline; a network failure becomes a TransientError."""
    import requests
    from urllib3.util import Timeout

    left = time_left()
    if left <= 0:
        raise TransientError(f"{method} not sent: the event's deadline (EVENT_DEADLINE_SECONDS) has passed")
    limit = Timeout(connect=min(timeout[0], left), read=min(timeout[1], left), total=min(sum(timeout), left))
    try:
        # requests hands a urllib3 Timeout to the pool as it is (HTTPAdapter.send); its stubs allow numbers only
        return session.request(method, url, verify=verify, timeout=limit, **kwargs)  # type: ignore[arg-type]
    except requests.exceptions.SSLError:
        raise UntrustedCertificate(
            f"the TLS certificate of {origin_of(url)} is not trusted, so nothing was sent; for a Bitbucket Data Center "
            'server, set "ca_certificate" in its entry of the credentials to the PEM of the CA that signed it'
        ) from None
    except requests.RequestException as error:
        message = f"{method} to {urlsplit(url).hostname} failed: {type(error).__name__}"
        if isinstance(error, requests.ConnectionError):  # refused, dropped, or timed out (after the retries)
            raise Unreachable(message, origin_of(url)) from None
        raise TransientError(message) from None


def origin_of(url: str) -> str:
    return "{0.scheme}://{0.netloc}".format(urlsplit(url))


def _json(response: requests.Response) -> Mapping[str, Any]:
    try:
        return _dict(response.json())
    except ValueError:
        return {}


class Budget:
    """Each credential's hourly budget: once Bitbucket says it is nearly spent (X-RateLimit-NearLimit),
    only final states are posted with that credential for the cooldown. Kept per credential value, so a
    rotated token starts afresh."""

    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self._spent_until: dict[str, float] = {}  # credential secret → end of its cooldown (time.monotonic())
        self._lock = threading.Lock()

    def nearly_spent(self, entry: Credential | None) -> bool:
        return entry is not None and self._spent_until.get(entry.secret, 0.0) > time.monotonic()

    def spare(self, entry: Credential | None) -> bool:
        """Whether the credential may spend a call beyond what a build's status and report need (a report's
        annotations, a repository's visibility): these give way first."""
        return not self.nearly_spent(entry)

    def note(self, entry: Credential, headers: Mapping[str, str]) -> None:
        """Bitbucket's X-RateLimit-* headers of a response to `entry`'s credential."""
        if headers.get("X-RateLimit-NearLimit", "").lower() != "true":
            return
        with self._lock:
            if self.nearly_spent(entry):
                return
            self._spent_until[entry.secret] = time.monotonic() + self.cooldown
        limit = _clip(headers.get("X-RateLimit-Limit", "not given"), 20)
        log(
            "WARNING",
            f"Bitbucket says the hourly budget of credential entry {entry.position} is nearly spent "
            f"(X-RateLimit-Limit {limit}): only final states are posted with it for {self.cooldown:.0f} s",
            credential=entry.position,
        )


class CertificateFiles:
    """What TLS verification trusts for an entry's site: its own CA only, written once to a temporary
    file that requests verifies the server against; or, with no CA given, the system's. Each file is removed when
    the instance that wrote it is gone (or the interpreter exits)."""

    def __init__(self) -> None:
        self._files: dict[str, str] = {}  # CA certificate (PEM) → its file
        self._lock = threading.Lock()

    def verify(self, entry: Credential) -> str | bool:
        if entry.ca_certificate is None:
            return True
        with self._lock:
            if entry.ca_certificate not in self._files:
                import tempfile

                with tempfile.NamedTemporaryFile("w", suffix=".pem", prefix="bitbucket-ca-", delete=False) as file:
                    file.write(entry.ca_certificate)  # a public certificate, not a secret
                self._files[entry.ca_certificate] = file.name
                weakref.finalize(self, _remove_file, file.name)
            return self._files[entry.ca_certificate]


def _remove_file(path: str) -> None:
    with suppress(OSError):
        os.remove(path)


# --- The Bitbucket client: two sites -------------------------------------------


class RemoteStatus(NamedTuple):
    """A status as Bitbucket shows it."""

    state: str  # Cloud's name
    url: str
    description: str
    updated_on: datetime | None


@dataclass
class Client:
    """Calls to Bitbucket signed with the credential that serves the repository: one 401 reads the
    credentials again and repeats the call; what is left of a failure after urllib3's retries is
    raised as TransientError (RateLimited for 429) or Rejected. A 404 means no such repository to a
    write, and no such status (or repository) to a read."""

    keyring: Keyring
    budget: Budget
    certificates: CertificateFiles
    session: requests.Session
    timeout: Any

    def read(self, repository: Repository, url: str, params: Any = None) -> Mapping[str, Any] | None:
        """The JSON body Bitbucket answers, or None for 404."""
        response = self._call(repository, "GET", url, params=params)
        return None if response.status_code == 404 else _json(response)

    def write(self, repository: Repository, method: str, url: str, body: Any) -> None:
        response = self._call(repository, method, url, body=body)
        if response.status_code == 404:
            raise RepositoryNotFound(f"Bitbucket answered 404: {bitbucket_error(response)}")

    def delete(self, repository: Repository, url: str) -> None:
        """Nothing there to delete (404) is as good as deleted."""
        self._call(repository, "DELETE", url)

    def _call(self, repository: Repository, method: str, url: str, body: Any = None, params: Any = None) -> Any:
        entry, header = self.keyring.sign(repository)
        response = self._send(entry, method, url, body, params, header)
        if response.status_code == 401:
            # The credential may have been rotated since this instance read it.
            entry, header = self.keyring.sign(repository, refused=header)
            response = self._send(entry, method, url, body, params, header)
        self.budget.note(entry, response.headers)
        if response.ok or response.status_code == 404:
            return response
        message = f"Bitbucket answered {response.status_code} to {method}: {bitbucket_error(response)}"
        if response.status_code == 401:
            raise TransientError(f"{message} (credentials refused after fetching them again)")
        if response.status_code == 429:
            raise RateLimited(f"{message} (credential entry {entry.position})")
        if response.status_code >= 500:
            raise TransientError(message)
        raise Rejected(message, response.status_code)

    def answer(self, repository: Repository, url: str) -> tuple[Credential, int]:
        """The entry serving the repository and Bitbucket's answer to its GET of `url` (a 401 read again once, as
        every call is): what `make doctor` asks of each repository."""
        entry, header = self.keyring.sign(repository)
        response = self._send(entry, "GET", url, None, None, header)
        if response.status_code == 401:
            entry, header = self.keyring.sign(repository, refused=header)
            response = self._send(entry, "GET", url, None, None, header)
        return entry, response.status_code

    def _send(self, entry: Credential, method: str, url: str, body: Any, params: Any, header: str) -> Any:
        headers = {"Authorization": header, "Accept": "application/json"}
        verify = self.certificates.verify(entry)
        body = scrubbed(body, known_secrets(self.keyring.secret_values()))  # whatever field a credential reached
        return send(self.session, method, url, self.timeout, verify, json=body, params=params, headers=headers)


def bitbucket_error(response: requests.Response) -> str:
    """Bitbucket's own words from an error body (Cloud's `error`, Data Center's `errors`), or the reason phrase."""
    body = _json(response)
    errors = body.get("errors")
    error = _dict(body.get("error")) or (_dict(errors[0]) if isinstance(errors, list) and errors else {})
    message = _text(error.get("message")) or response.reason or "no error message"
    fields = _dict(error.get("fields"))
    if fields:
        message += " (" + "; ".join(f"{k}: {v}" for k, v in fields.items()) + ")"
    return _clip(message, 500)


class Site(Protocol):
    """What the reporter needs of a site; signing, retries and never-backwards are written once above."""

    def body(self, status: CommitStatus) -> dict[str, Any]: ...
    def read(self, repository: Repository, commit: str, key: str) -> RemoteStatus | None: ...
    def write(self, repository: Repository, commit: str, body: dict[str, Any]) -> None: ...
    def write_report(self, repository: Repository, commit: str, report: Report) -> None: ...
    def delete_report(self, repository: Repository, commit: str, report: Report) -> None: ...
    def write_annotations(self, repository: Repository, commit: str, report: Report) -> None: ...
    def is_private(self, repository: Repository) -> bool | None: ...
    def repository_url(self, repository: Repository) -> str: ...


@dataclass
class BitbucketCloud:
    """Bitbucket Cloud's commit statuses: its paths, its body (`commitstatus`) and its answers."""

    api_url: str
    client: Client

    def body(self, status: CommitStatus) -> dict[str, str]:
        body = {
            "key": status.key,
            "state": status.state,
            "name": status.name,
            "url": status.url,
            "description": status.description,
        }
        if status.refname:
            body["refname"] = status.refname
        return body

    def read(self, repository: Repository, commit: str, key: str) -> RemoteStatus | None:
        body = self.client.read(repository, f"{self.statuses_url(repository, commit)}/{key}")
        if body is None:
            return None
        return RemoteStatus(
            state=_text(body.get("state")),
            url=_text(body.get("url")),
            description=_text(body.get("description")),
            updated_on=parse_time(body.get("updated_on")),
        )

    def write(self, repository: Repository, commit: str, body: dict[str, Any]) -> None:
        self.client.write(repository, "POST", self.statuses_url(repository, commit), body)

    def report_body(self, report: Report) -> dict[str, Any]:
        result = "PASSED" if report.passed else "FAILED"
        return {**report.shared, "report_type": "TEST", "result": result, "data": report_fields(report, "text")}

    def write_report(self, repository: Repository, commit: str, report: Report) -> None:
        self.client.write(repository, "PUT", self.report_url(repository, commit, report.key), self.report_body(report))

    def delete_report(self, repository: Repository, commit: str, report: Report) -> None:
        self.client.delete(repository, self.report_url(repository, commit, report.key))

    def annotation_body(self, annotation: Annotation) -> dict[str, Any]:
        return {
            "external_id": annotation.key,
            "annotation_type": "BUG",
            "summary": annotation.message,
            "details": f"Found by {REPORTER} ({annotation.tool})",
            "severity": annotation.site_severity,
            "result": "FAILED",
            **annotation.place(),
        }

    def write_annotations(self, repository: Repository, commit: str, report: Report) -> None:
        url = f"{self.report_url(repository, commit, report.key)}/annotations"  # at most 100 a request: one request
        self.client.write(repository, "POST", url, [self.annotation_body(a) for a in report.annotations])

    def is_private(self, repository: Repository) -> bool | None:
        body = self.client.read(repository, self.repository_url(repository))
        private = body.get("is_private") if body is not None else None
        return private if isinstance(private, bool) else None

    def repository_url(self, repository: Repository) -> str:
        return f"{self.api_url}/repositories/{repository.owner}/{repository.slug}"

    def report_url(self, repository: Repository, commit: str, key: str) -> str:
        return f"{self.api_url}/repositories/{repository.owner}/{repository.slug}/commit/{commit}/reports/{key}"

    def statuses_url(self, repository: Repository, commit: str) -> str:
        return f"{self.api_url}/repositories/{repository.owner}/{repository.slug}/commit/{commit}/statuses/build"


# Data Center names Cloud's STOPPED "CANCELLED".
DATA_CENTER_STATES = {
    "INPROGRESS": "INPROGRESS",
    "SUCCESSFUL": "SUCCESSFUL",
    "FAILED": "FAILED",
    "STOPPED": "CANCELLED",
}
STATES_FROM_DATA_CENTER = {server: cloud for cloud, server in DATA_CENTER_STATES.items()}


@dataclass
class BitbucketDataCenter:
    """A Bitbucket Data Center server's build statuses (the repository names the server): its paths,
    its body and its answers."""

    client: Client

    def body(self, status: CommitStatus) -> dict[str, Any]:
        body: dict[str, Any] = {
            "key": status.server_key,
            "state": DATA_CENTER_STATES[status.state],
            "name": status.name,
            "url": status.url,
            "description": status.description,
            "parent": status.parent,
        }
        if status.refname or status.tag:
            body["ref"] = f"refs/heads/{status.refname}" if status.refname else f"refs/tags/{status.tag}"
        if status.duration_ms is not None:
            body["duration"] = status.duration_ms
        if status.tests is not None:
            body["testResults"] = dict(zip(("successful", "failed", "skipped"), status.tests, strict=True))
        return body

    def read(self, repository: Repository, commit: str, key: str) -> RemoteStatus | None:
        body = self.client.read(repository, self.builds_url(repository, commit), params={"key": key})
        if body is None:
            return None
        state, updated = _text(body.get("state")), body.get("updatedDate")
        return RemoteStatus(
            state=STATES_FROM_DATA_CENTER.get(state, state),
            url=_text(body.get("url")),
            description=_text(body.get("description")),
            updated_on=datetime.fromtimestamp(updated / 1000, UTC) if isinstance(updated, int) else None,
        )

    def write(self, repository: Repository, commit: str, body: dict[str, Any]) -> None:
        self.client.write(repository, "POST", self.builds_url(repository, commit), body)

    def report_body(self, report: Report) -> dict[str, Any]:
        return {
            **report.shared,
            "result": "PASS" if report.passed else "FAIL",
            "data": report_fields(report, "linktext"),
        }

    def write_report(self, repository: Repository, commit: str, report: Report) -> None:
        url = self.report_url(repository, commit, report.server_key)
        self.client.write(repository, "PUT", url, self.report_body(report))

    def delete_report(self, repository: Repository, commit: str, report: Report) -> None:
        """The report and its annotations: the server keeps a replaced report's annotations."""
        self.client.delete(repository, self.report_url(repository, commit, report.server_key))

    def annotation_body(self, annotation: Annotation) -> dict[str, Any]:
        return {
            "externalId": annotation.key,
            "message": annotation.message,
            "severity": annotation.site_severity,
            "type": "BUG",
            **annotation.place(),
        }

    def write_annotations(self, repository: Repository, commit: str, report: Report) -> None:
        url = f"{self.report_url(repository, commit, report.server_key)}/annotations"
        annotations = [self.annotation_body(a) for a in report.annotations]
        self.client.write(repository, "POST", url, {"annotations": annotations})

    def is_private(self, repository: Repository) -> bool | None:
        """Private unless the repository or its project is public (a project's public repositories are)."""
        body = self.client.read(repository, self.repository_url(repository))
        if body is None or not isinstance(body.get("public"), bool):
            return None
        return not (body["public"] or _dict(body.get("project")).get("public") is True)

    def report_url(self, repository: Repository, commit: str, key: str) -> str:
        project, slug = repository.owner, repository.slug
        return (
            f"{repository.server}/rest/insights/latest/projects/{project}/repos/{slug}/commits/{commit}/reports/{key}"
        )

    def repository_url(self, repository: Repository) -> str:
        return f"{repository.server}/rest/api/latest/projects/{repository.owner}/repos/{repository.slug}"

    def builds_url(self, repository: Repository, commit: str) -> str:
        project, slug = repository.owner, repository.slug
        return f"{repository.server}/rest/api/latest/projects/{project}/repos/{slug}/commits/{commit}/builds"


# --- Cloud Build's API ---------------------------------------------------------


# What each question needs, named in the one WARNING an instance logs when it may not be asked.
CLOUD_BUILD_PERMISSIONS = {
    "repositories": "cloudbuild.repositories.get (roles/cloudbuild.connectionViewer on the connection). "
    "Until then a connected repository is taken to be the Bitbucket Cloud repository REPO_FULL_NAME names",
    "builds": "cloudbuild.builds.get (roles/cloudbuild.builds.viewer on the project). Until then, of two "
    "builds of one status, the one whose message was published later wins",
}


class CloudBuild:
    """Cloud Build's own API, asked with the function's Google credentials:
    - where a repository of a Cloud Build connection lives (GET /v2/{repository}, once per repository per
      instance); None when the API may not be asked (403, 404, no Google credentials): REPO_FULL_NAME then;
    - when a build was created (GET /v1/projects/{p}/locations/{r}/builds/{id}); None when it may not be
      asked, and the reporter falls back to publish times.
    408, 429, 5xx and failures to reach it are transient; any other answer about a repository raises
    NotLocated, and nothing is remembered. No lock is held while a request is on its way."""

    SCOPE = "https://www.googleapis.com/auth/cloud-platform"

    REMOTES = 1024  # connected repositories whose answer is remembered

    def __init__(self, api_url: str, timeout: tuple[float, float]) -> None:
        self.api_url = api_url
        self.timeout = timeout
        self._session: Any = None
        self._remotes = Lru(self.REMOTES)  # repository → (its remoteUri, or None: the API may not be asked)
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def remote_uri(self, repository: str) -> str | None:
        known: tuple[str | None] | None = self._remotes.get(repository)
        if known is not None:
            return known[0]
        found = self._remote_uri(repository)
        self._remotes.put(repository, (found,))
        return found

    def _remote_uri(self, repository: str) -> str | None:
        response = self._ask("repositories", repository, f"{self.api_url}/v2/{repository}")
        if response is None:
            return None
        if not response.ok:
            code = response.status_code
            raise NotLocated(f"Cloud Build's API answered {code} for the build's connected repository {repository}")
        return _text(_json(response).get("remoteUri")) or None

    def create_time(self, build: BuildRef) -> datetime | None:
        """When the build was created, or None when Cloud Build's API may not be asked or does not say."""
        name = f"projects/{build.project}/locations/{build.region}/builds/{build.build_id}"
        response = self._ask("builds", name, f"{self.api_url}/v1/{name}")
        return parse_time(_json(response).get("createTime")) if response is not None and response.ok else None

    def _ask(self, topic: str, name: str, url: str) -> requests.Response | None:
        """Cloud Build's answer; None (with the instance's one WARNING) when the API may not be asked."""
        session = self.authorized()
        if session is None:
            self._fall_back(topic, name, "the function has no Google credentials")
            return None
        response = self.get(session, url)
        code = response.status_code
        if code in (408, 429) or code >= 500:
            raise TransientError(f"Cloud Build's API answered {code} for {name}")
        if code in (403, 404):
            self._fall_back(topic, name, f"answered {code}")
            return None
        return response

    def authorized(self) -> Any:
        """The session signed with the function's Google credentials; None without any (a local run)."""
        with self._lock:
            if self._session is None:
                import google.auth
                from google.auth.exceptions import DefaultCredentialsError
                from google.auth.transport.requests import AuthorizedSession

                try:
                    credentials, _ = google.auth.default(scopes=[self.SCOPE])
                except DefaultCredentialsError:
                    return None
                self._session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]  # google-auth: no hints
            return self._session

    def get(self, session: Any, url: str) -> requests.Response:
        return self.request(session, "GET", url)

    def request(self, session: Any, method: str, url: str, **kwargs: Any) -> requests.Response:
        """A request with the function's Google credentials; google-auth's own failures become ours."""
        from google.auth import exceptions

        try:
            return send(session, method, url, self.timeout, **kwargs)
        except exceptions.RefreshError as error:
            if getattr(error, "retryable", False):
                raise TransientError("the function's Google credentials could not be refreshed this time") from None
            raise ConfigurationError(
                "Google refused to refresh the function's credentials (google.auth RefreshError) for Cloud Build's API"
            ) from None
        except exceptions.GoogleAuthError as error:  # TransportError: Google's token endpoint did not answer
            raise TransientError(f"Google's token endpoint could not be reached ({type(error).__name__})") from None

    def _fall_back(self, topic: str, name: str, why: str) -> None:
        with self._lock:
            if topic in self._warned:
                return
            self._warned.add(topic)
        log(
            "WARNING",
            f"Cloud Build's API could not say about {name} ({why}): give the function's service account "
            f"{CLOUD_BUILD_PERMISSIONS[topic]}",
        )


# --- The failed step's log: Cloud Logging ---------------------------------------


class LogUnavailable(Exception):
    """The failed step's lines cannot be read this time: the report goes without them, saying why."""


LOG_READS = 3  # a log not complete yet is read again, twice at most
LOG_RESPONSE_MAX = 8 << 20  # bytes of one answer of Cloud Logging (a thousand lines of 8 KB)
WRITES_RESERVE = 30.0  # seconds of the event's deadline kept for the report's own writes after waiting for a log
LOGGING_ROLE = (
    "roles/logging.viewAccessor on the log view LOG_VIEW of the project's _Default bucket (make deploy creates it "
    "and grants it), or roles/logging.viewer on the project"
)


class CloudLogging:
    """A failed step's last lines, read from Cloud Logging (entries.list) with the function's Google credentials,
    through the log view LOG_VIEW when one is set, else the project's logs."""

    def __init__(self, api_url: str, google: CloudBuild, view: str, wait: float) -> None:
        self.api_url = api_url
        self.google = google
        self.view = view
        self.wait = wait
        self._warned = False

    def step_lines(self, project: str, step: FailedStep) -> tuple[list[str], bool]:
        """The step's lines, oldest first (its last LOG_LINES_SCANNED), and whether the log is complete (Cloud
        Build's last line is in): a log that is not is read again within LOG_WAIT_SECONDS."""
        if not PROJECT_ID_RE.fullmatch(project):
            raise LogUnavailable("the build's project is not a project ID")
        resource = f"projects/{project}/locations/global/buckets/_Default/views/{self.view}" if self.view else (
            f"projects/{project}"
        )  # fmt: skip
        body = {"resourceNames": [resource], "filter": log_filter(project, step), "orderBy": "timestamp desc",
                "pageSize": LOG_LINES_SCANNED}  # fmt: skip
        waits = [self.wait / 3, self.wait * 2 / 3]
        while True:
            lines, complete = self._read(body, step)
            if complete or not waits or time_left() - waits[0] <= WRITES_RESERVE:  # the read again takes time too
                return lines, complete
            time.sleep(waits.pop(0))

    def _read(self, body: dict[str, Any], step: FailedStep) -> tuple[list[str], bool]:
        session = self.google.authorized()
        if session is None:
            raise LogUnavailable("the function has no Google credentials")
        url = f"{self.api_url}/v2/entries:list"
        try:
            response = self.google.request(session, "POST", url, json=body, stream=True)
            with response:  # a step's lines may be 256 KB each: what is read is bounded, whatever is sent
                raw = response.raw.read(LOG_RESPONSE_MAX + 1, decode_content=True)
        except (TransientError, ConfigurationError) as error:
            raise LogUnavailable(f"Cloud Logging could not be asked ({error})") from None
        except OSError as error:  # the answer broke off while it was read
            raise LogUnavailable(f"Cloud Logging's answer could not be read ({type(error).__name__})") from None
        code = response.status_code
        if code in (401, 403, 404):
            self._warn(code)
            raise LogUnavailable(f"the function may not read the build's log (Cloud Logging answered {code})")
        if code == 429:
            raise LogUnavailable("Cloud Logging's read quota is spent for now (429)")
        if not response.ok:
            raise LogUnavailable(f"Cloud Logging answered {code}")
        if len(raw) > LOG_RESPONSE_MAX:
            raise LogUnavailable(f"the step's last lines are too long to read (over {LOG_RESPONSE_MAX >> 20} MB)")
        try:
            answer = _dict(json.loads(raw))
        except ValueError:
            answer = {}
        entries = [e for e in answer.get("entries") or () if isinstance(e, dict)]
        lines, complete = [], False
        for entry in reversed(entries):  # asked newest first: the last lines of a long log
            text, label = _text(entry.get("textPayload")), _dict(entry.get("labels")).get("build_step")
            if label == "MAIN":
                complete = complete or text in ("DONE", "ERROR", "TIMEOUT") or text.startswith("ERROR:")
            elif label == step.label:
                lines.append(STEP_PREFIX_RE.sub("", _text_raw(entry.get("textPayload")), count=1))
        return lines, complete

    def _warn(self, code: int) -> None:
        if not self._warned:
            self._warned = True
            log("WARNING", f"Cloud Logging answered {code} to reading a failed step's log: reports go without its "
                           f"lines until the function's service account has {LOGGING_ROLE}")  # fmt: skip


def _text_raw(value: Any) -> str:
    """A log line as written (its indentation kept), or "" for none."""
    return value.rstrip("\n") if isinstance(value, str) else ""


# --- Test results: Cloud Storage ---------------------------------------------------


class TestReports:
    """A build's JUnit files, read from Cloud Storage with the function's Google credentials — only from the buckets
    TEST_REPORT_BUCKETS allows the project the event speaks for, at most TEST_FILES_MAX files, TEST_FILE_BYTES_MAX a
    file and TEST_BYTES_MAX in all (past a bound the counts say they are partial). Reading them never costs the
    status: any failure only leaves the counts out, or partial. What a build's files showed is kept for that build
    alone (a final message delivered again reads nothing), and only what a report shows of them."""

    WARNED_MAX = 256  # (project, bucket) warned about, remembered; then forgotten at once (one more WARNING each)

    def __init__(self, buckets: frozenset[tuple[str, str]]) -> None:
        self.buckets = buckets
        self._client: Any = None
        self._read = Lru(256)  # (project, sources) → (their results,)
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def read(self, sources: TestSources, directory: str = "", secrets: Iterable[str] = ()) -> TestResults | None:
        """The build's test results (their failed tests placed in `directory`, the failed step's, and `secrets`
        masked), or None when there are none to read."""
        if sources.refused:
            log("WARNING", f"Test results of this build left out: {sources.refused}; nothing is read from it")
        key = (_project.get(), sources)
        known: tuple[TestResults] | None = self._read.get(key)
        if known is not None:
            return known[0]
        results = self._read_all(sources, directory, list(secrets))
        if results is not None and not results.partial:  # partial may be a passing failure: read again next time
            self._read.put(key, (results,))
        return results

    def _read_all(self, sources: TestSources, directory: str, secrets: list[str]) -> TestResults | None:
        files: list[tuple[str, str, str]] = []
        partial = False
        try:
            if sources.folder and self._allowed(sources.folder[0]):
                files += self._listed(*sources.folder)
            if sources.manifest and self._allowed(sources.manifest[0]):
                text = self._download(sources.manifest[0], sources.manifest[1], "", TEST_FILE_BYTES_MAX)
                files += manifest_files(text.decode("utf-8", "replace"), sources.manifest) if text is not None else []
        except Exception as error:  # google.api_core errors, imported lazily; a transport failure
            self._failed(error, "listing the test report files")
            return None
        if not files:
            return None
        if len(files) > TEST_FILES_MAX:
            files, partial = files[:TEST_FILES_MAX], True
        results, read = TestResults(partial=partial), 0
        for bucket, name, generation in files:
            if read >= TEST_BYTES_MAX or time_left() < WRITES_RESERVE:
                return results + TestResults(partial=True)
            try:
                data = self._download(bucket, name, generation, min(TEST_FILE_BYTES_MAX, TEST_BYTES_MAX - read))
            except Exception as error:
                self._failed(error, f"reading gs://{bucket}/{loggable(name, 100)}")
                results += TestResults(partial=True)
                continue
            if data is None:  # past a bound
                results += TestResults(partial=True)
                continue
            read += len(data)
            try:
                results += parse_junit(data, directory, secrets)
            except ValueError as error:
                log("WARNING", f"Skipped the test report gs://{bucket}/{loggable(name, 100)}: not a JUnit XML file "
                               f"({error})")  # fmt: skip
                results += TestResults(partial=True)
            del data
        return results

    def _allowed(self, bucket: str) -> bool:
        project = _project.get()
        if ("", bucket) in self.buckets or (project, bucket) in self.buckets:
            return True
        with self._lock:
            warn = (project, bucket) not in self._warned
            if len(self._warned) >= self.WARNED_MAX:
                self._warned.clear()
            self._warned.add((project, bucket))
        if warn:
            which = f" for project {project}" if any(p for p, _ in self.buckets) else ""
            log("WARNING", f"A build names test reports in gs://{bucket}, which is not one of TEST_REPORT_BUCKETS"
                           f"{which}: nothing is read from it")  # fmt: skip
        return False

    def _listed(self, bucket: str, prefix: str) -> list[tuple[str, str, str]]:
        storage = self._storage()
        blobs = storage.list_blobs(bucket, prefix=prefix, max_results=10 * TEST_FILES_MAX, timeout=google_timeout())
        return sorted((bucket, b.name, "") for b in blobs if b.name.endswith(".xml"))

    def _download(self, bucket: str, name: str, generation: str, limit: int) -> bytes | None:
        """The object, or None when it is larger than `limit` (nothing past it is read)."""
        blob = self._storage().bucket(bucket).blob(name, generation=int(generation) if generation else None)
        data: bytes = blob.download_as_bytes(start=0, end=limit, timeout=google_timeout())
        return None if len(data) > limit else data

    def _storage(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import storage  # type: ignore[attr-defined]  # it ships no type hints

                self._client = storage.Client()
            return self._client

    def _failed(self, error: Exception, what: str) -> None:
        code = getattr(error, "code", None)
        if code == 403:
            grant = "roles/storage.objectViewer on the bucket (make deploy TEST_REPORT_BUCKETS=...)"
            log("WARNING", f"Cloud Storage refused {what} (403): give the function's service account {grant}")
        elif code != 404:
            said = f"{type(error).__name__}{f' {code}' if code else ''}"
            log("WARNING", f"Test results left out: {what} failed ({said})")


# --- Reporting: never backwards ------------------------------------------------


class LastShown(NamedTuple):
    """What this instance last saw Bitbucket show under one status identity."""

    build_id: str  # the build it shows (the last segment of its URL)
    state: str
    description: str
    written_here: bool  # this instance wrote it
    reported: bool = False  # this instance wrote the build's report
    # Whether a report of another build (or an earlier attempt at this one's) may be on Bitbucket under the key, its
    # annotations with it: neither site removes annotations when a report is replaced. Not known: it may.
    foreign_report: bool = True


class Outcome(NamedTuple):
    """What became of an update: of its status (POSTED, ALREADY_SHOWN, STALE, BUDGET_SPENT), on which
    repository, what state Bitbucket showed before ("" for none, or not known), and of its report ("" when
    none was due)."""

    status: str
    repository: Repository
    report: str = ""
    before: str = ""


POSTED = "posted"
ALREADY_SHOWN = "Bitbucket already shows this or a later state of the build"
STALE = "Bitbucket shows a later state or a newer build, so this message is stale"
BUDGET_SPENT = "the hourly budget of its credential is nearly spent: only final states are posted with it for now"
REPORT_WRITTEN = "its Code Insights report written"
REPORT_SKIPPED = "its Code Insights report skipped: the hourly budget of its credential is nearly spent"
REPORT_REFUSED = "refused its Code Insights report"
ANNOTATIONS_REFUSED = "refused its annotations"
VISIBILITY_SECONDS = 600.0  # a repository's visibility, read for a failed step's lines, is read again after this


class Lru:
    """A bounded mapping that forgets the least recently used entry first; safe across threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def pop(self, key: Any) -> None:
        with self._lock:
            self._items.pop(key, None)


class Memory:
    """What this instance has seen: the last status shown under each identity, and when each build was
    created, as each project vouches for it; and a lock of each identity's own, so two events of one status
    never read and write at once while events of other statuses never wait for them (each holds its lock
    across network calls)."""

    SIZE = 2048

    def __init__(self) -> None:
        self.shown = Lru(self.SIZE)  # identity → LastShown
        # (project, build id) → createTime. A message vouches only for builds of the project it speaks for: a
        # build id claimed in one team's topic must not make another team's build look newer than it is.
        self.created = Lru(2 * self.SIZE)
        self._locks: dict[tuple[str, ...], list[Any]] = {}  # identity → [its lock, events holding or awaiting it]
        self._guard = threading.Lock()

    @contextmanager
    def locked(self, identity: tuple[str, ...]) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(identity, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[identity]


@dataclass
class Reporter:
    """Posts updates to their site so a status never moves backwards, of two builds of one status the newer
    wins, and repeats cost nothing; with a final state, writes its Code Insights report after the status."""

    cloud: BitbucketCloud
    data_center: BitbucketDataCenter
    keyring: Keyring
    budget: Budget
    cloud_build: CloudBuild
    memory: Memory = field(default_factory=lambda: Memory())
    # Write the report of a final state Bitbucket already shows but this instance did not post: a redelivery
    # may owe it. A resync does not, so that a run over statuses that are right costs one read each.
    reports_for_shown: bool = True
    logs: CloudLogging | None = None  # a failed step's lines in its report; None: none read
    log_excerpts: str = "private"  # LOG_EXCERPTS
    log_lines: int = DEFAULT_LOG_EXCERPT_LINES
    _mirror_splits: Lru = field(default_factory=lambda: Lru(Memory.SIZE))  # repoName → the split Bitbucket accepted
    _private: Lru = field(default_factory=lambda: Lru(Memory.SIZE))  # repository → (whether it is private, read when)
    clock: Callable[[], float] = time.monotonic  # when a visibility was read

    def report(self, update: Update, published: datetime | None) -> Outcome:
        """Post the update unless it would be stale; say what happened, and to which repository."""
        *others, last = self._ordered(update.target)
        for repository in others:  # a mirror's other splits, tried while Bitbucket answers 404
            try:
                return self._report_to(repository, update, published)
            except RepositoryNotFound:
                continue
        return self._report_to(last, update, published)

    def _ordered(self, target: Target) -> tuple[Repository, ...]:
        known = self._mirror_splits.get(target.mirror or "")
        if known in target.candidates:
            return (known, *(r for r in target.candidates if r != known))
        return target.candidates

    def _report_to(self, repository: Repository, update: Update, published: datetime | None) -> Outcome:
        site: Site = self.cloud if repository.server is None else self.data_center
        body = site.body(update.status)
        # Both sites keep one status per repository, commit and key: the branch is an attribute of it.
        identity = (repository.server or "", repository.full_name.lower(), update.target.commit, body["key"])
        created = _claimed(update.created, published)
        if created:
            self.memory.created.put((_project.get(), update.build_id), created)
        with self.memory.locked(identity):
            outcome, before = self._post_unless_stale(site, repository, identity, body, update, created, published)
            due = self._report_due(identity, update)
            report = self._write_report(site, repository, identity, update) if due else ""
        if update.target.mirror:
            self._mirror_splits.put(update.target.mirror, repository)
        return Outcome(outcome, repository, report, before)

    def _post_unless_stale(
        self,
        site: Site,
        repository: Repository,
        identity: tuple[str, ...],
        body: dict[str, Any],
        update: Update,
        created: datetime | None,
        published: datetime | None,
    ) -> tuple[str, str]:
        """What became of the status, and the state Bitbucket showed before."""
        status, commit = update.status, update.target.commit
        last: LastShown | None = self.memory.shown.get(identity)
        same_build = last is not None and last.build_id == update.build_id
        before = last.state if last else ""
        if last and same_build and not _advances(last.state, last.description, status):
            return ALREADY_SHOWN, before
        shown_created = self.memory.created.get((_project.get(), last.build_id)) if last else None
        if last and not same_build and created and shown_created and shown_created > created:
            return STALE, before  # this instance knows a newer build is shown
        if not status.is_final and self.budget.nearly_spent(self.keyring.entry_for(repository)):
            return BUDGET_SPENT, before
        foreign = last.foreign_report if last else True
        if not (last and same_build and last.written_here):
            remote = site.read(repository, commit, body["key"])
            before = remote.state if remote else ""
            # a passing build's report carries no annotations, and none of an older one's: its own replaced them
            foreign = remote is not None and remote.state != "SUCCESSFUL"
            if remote:
                shown, shown_created = self._shown(remote, update.build_id)
                if not _replaces(update, created, shown, shown_created, remote.updated_on, published):
                    self.memory.shown.put(identity, shown)
                    return ALREADY_SHOWN if shown.build_id == update.build_id else STALE, before
        try:
            site.write(repository, commit, body)
        except Exception:
            self.memory.shown.pop(identity)
            raise
        shown_now = LastShown(update.build_id, status.state, status.description, True, foreign_report=foreign)
        self.memory.shown.put(identity, shown_now)
        return POSTED, before

    def _report_due(self, identity: tuple[str, ...], update: Update) -> bool:
        """Whether Bitbucket now shows this build's final state (posted, or already shown) and this instance has
        not written its report yet; never for a build whose status gave way to a newer build's."""
        last: LastShown | None = self.memory.shown.get(identity)
        if update.report is None or last is None or last.build_id != update.build_id:
            return False
        if not (last.written_here or self.reports_for_shown):
            return False
        return last.state in FINAL_STATES and not last.reported

    def _write_report(self, site: Site, repository: Repository, identity: tuple[str, ...], update: Update) -> str:
        """After the status: the build's report, unless the credential's budget is nearly spent; a refusal is
        the outcome, a transient failure raises (the status, already shown, is not posted again)."""
        assert update.report is not None
        entry, commit = self.keyring.entry_for(repository), update.target.commit
        if self.budget.nearly_spent(entry):
            return REPORT_SKIPPED
        site_name = "Bitbucket Cloud" if repository.server is None else f"the Data Center server {repository.server}"
        try:
            report = self._with_log(site, repository, update.report)
            last = self.memory.shown.get(identity)
            if last is None or last.foreign_report:  # its annotations would outlive the report it replaces
                site.delete_report(repository, commit, report)
            self._note(identity, update, foreign_report=True)  # until its annotations are in too
            site.write_report(repository, commit, report)
        except RateLimited:
            return REPORT_SKIPPED
        except Rejected as error:
            return f"{site_name} {REPORT_REFUSED}: {error}"
        said = REPORT_WRITTEN
        if report.annotations and self.budget.spare(entry):  # annotations give way before the report does
            try:
                site.write_annotations(repository, commit, report)
                said += f" with {len(report.annotations)} annotation{'s' if len(report.annotations) > 1 else ''}"
            except RateLimited:
                said += "; its annotations skipped: the hourly budget of its credential is spent"
            except Rejected as error:
                said += f"; {site_name} {ANNOTATIONS_REFUSED}: {error}"
        self._note(identity, update, reported=True, foreign_report=False)
        return said

    def _note(self, identity: tuple[str, ...], update: Update, **changes: bool) -> None:
        last = self.memory.shown.get(identity)
        if last is not None and last.build_id == update.build_id:
            self.memory.shown.put(identity, last._replace(**changes))

    def _with_log(self, site: Site, repository: Repository, report: Report) -> Report:
        """The report with its failed step's last lines and their annotations, where they may be shown: never for a
        public repository unless LOG_EXCERPTS=all, never with LOG_EXCERPTS=off."""
        source = report.log
        if source is None or self.logs is None or self.log_excerpts == "off":
            return report
        if isinstance(source, str):
            return report.with_excerpt(Excerpt(note=source))
        if self.log_excerpts == "private" and not self._is_private(site, repository):
            return report.with_excerpt(Excerpt(note="the repository is not known to be private (LOG_EXCERPTS=private)"))
        try:
            lines, complete = self.logs.step_lines(_project.get(), source)
        except LogUnavailable as error:
            return report.with_excerpt(Excerpt(note=str(error)))
        secrets = [*self.keyring.secret_values(), *report.masks]
        return report.with_excerpt(excerpt_of(source, lines, complete, self.log_lines, secrets))

    def _is_private(self, site: Site, repository: Repository) -> bool:
        """Whether Bitbucket says the repository is private, read once per repository per instance and again once
        VISIBILITY_SECONDS have passed: a repository made public shows no more lines after that."""
        known: tuple[bool, float] | None = self._private.get(repository)
        if known is not None and self.clock() - known[1] < VISIBILITY_SECONDS:
            return known[0]
        if not self.budget.spare(self.keyring.entry_for(repository)):
            return False
        try:
            private = site.is_private(repository)
        except (Rejected, TransientError):
            return False  # not known this time: asked again next time
        self._private.put(repository, (private is True, self.clock()))
        return private is True

    def _shown(self, remote: RemoteStatus, build_id: str) -> tuple[LastShown, datetime | None]:
        """What a status read from Bitbucket shows, and, when it is another build's, when that build was
        created: as the project this event speaks for knows it (from its own messages or an earlier read), else
        asked of Cloud Build's API."""
        shown_id = urlsplit(remote.url).path.rsplit("/", 1)[-1]  # both log URL shapes end in /<build id>
        created = self.memory.created.get((_project.get(), shown_id))
        if created is None and shown_id != build_id and (ref := build_at(remote.url)):
            created = self.cloud_build.create_time(ref)
            if created:
                self.memory.created.put((_project.get(), shown_id), created)
        return LastShown(shown_id, remote.state, remote.description, False), created


def _claimed(created: datetime | None, published: datetime | None) -> datetime | None:
    """A build's createTime as its message claims it, but never after the message was published."""
    return min(created, published) if created and published else created


def _advances(shown_state: str, shown_description: str, status: CommitStatus) -> bool:
    """Whether the same build's new status is news over what is shown."""
    if shown_state in FINAL_STATES:
        return False  # a build's final state is final
    return phase(status.state, status.description) > phase(shown_state, shown_description)


def _replaces(
    update: Update,
    created: datetime | None,
    shown: LastShown,
    shown_created: datetime | None,
    written: datetime | None,
    published: datetime | None,
) -> bool:
    """Whether the update replaces what Bitbucket shows (written at `written`, by a build created at
    `shown_created`)."""
    if shown.build_id == update.build_id:
        return _advances(shown.state, shown.description, update.status)
    if created and shown_created and created != shown_created:
        return created > shown_created  # of two builds of one status, the newer wins, in any order
    # The shown build's age is not known: replaced unless Bitbucket wrote it after this message was published.
    return not (published and written and written > published)


# --- Logging -----------------------------------------------------------------


REPORTED_ERROR = "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"


def log(severity: str, message: str, **fields: Any) -> None:
    """One structured log line for Cloud Logging. An ERROR carries what Error Reporting needs to group it (its
    @type, and the function's name and revision as serviceContext), so its notifications work without setup."""
    entry: dict[str, Any] = {"severity": severity, "message": message}
    if severity == "ERROR":
        service = {"service": os.environ.get("K_SERVICE") or "bitbucket-build-status",
                   "version": os.environ.get("K_REVISION") or "local"}  # fmt: skip
        entry.update({"@type": REPORTED_ERROR, "serviceContext": service})
    entry.update({k: v for k, v in fields.items() if v is not None})
    # ASCII only: no raw line separator (U+2028, NEL) from a build can split the entry.
    sys.stdout.write(json.dumps(entry, default=str) + "\n")
    sys.stdout.flush()


def loggable(text: str, limit: int = SHOWN_MAX) -> str:
    """A value from a build as a log line (and resync's output) may show it: without user info (everything up to
    the last '@', so a password holding '/' or '?' goes too), query, fragment or ';parameters' (where access tokens
    ride), made plain and clipped. The one way any build value reaches a log; string methods only, so its cost is
    linear in the value's length whatever the value holds."""
    scheme, separator, rest = text.partition("://")
    if not (separator and 0 < len(scheme) <= 16 and all(c.isascii() and (c.isalnum() or c in "+-.") for c in scheme)):
        scheme, rest = "", text
    rest = rest.rpartition("@")[2]
    for mark in "?#;":
        rest = rest.partition(mark)[0]
    shown = f"{scheme}://{rest}" if scheme else rest
    return _clip(plain(shown[: limit + 1]), limit)


def _log_fields(build: Mapping[str, Any], update: Update | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "build_id": loggable(_text(build.get("id")), 100) or None,
        "trigger": loggable(trigger_name(build) or _text(build.get("buildTriggerId")), 100) or None,
        "build_status": loggable(_text(build.get("status")), 40) or None,
    }
    if update:
        fields.update(
            repository=update.target.candidates[0].full_name,
            commit=update.target.commit,
            state=update.status.state,
            key=update.status.key,
            refname=loggable(update.status.refname, 100) if update.status.refname else None,
        )
    return fields


# --- The warm instance ---------------------------------------------------------


@dataclass
class WarmInstance:
    """What one warm instance keeps between events: built from the environment on the first event."""

    config: Config
    keyring: Keyring
    cloud_build: CloudBuild
    reporter: Reporter
    tests: TestReports | None = None

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        budget: Budget | None = None,
        client_type: type[Client] | None = None,
        reports_for_shown: bool = True,
    ) -> WarmInstance:
        """The instance the environment configures; a resync passes its own budget, client and report rule."""
        config = Config.from_env(env)
        session = http_session(config.retry_backoff_seconds, sum(config.timeout), config.connections)
        keyring = Keyring(credential_source(env), session, config.oauth_token_url, config.timeout)
        budget = budget or Budget(config.rate_limit_cooldown_seconds)
        client = (client_type or Client)(keyring, budget, CertificateFiles(), session, config.timeout)
        cloud_build = CloudBuild(config.cloud_build_api_url, config.timeout)
        sites = BitbucketCloud(config.api_url, client), BitbucketDataCenter(client)
        logs = CloudLogging(config.logging_api_url, cloud_build, config.log_view, config.log_wait_seconds)
        reporter = Reporter(*sites, keyring, budget, cloud_build, reports_for_shown=reports_for_shown, logs=logs,
                            log_excerpts=config.log_excerpts, log_lines=config.log_excerpt_lines)  # fmt: skip
        return cls(config, keyring, cloud_build, reporter, TestReports(config.test_report_buckets))

    def masked(self, value: Any) -> Any:
        """A text (or a log line's fields) with every credential this instance holds masked: a build may show one."""
        return scrubbed(value, known_secrets(self.keyring.secret_values()))


_warm: WarmInstance | None = None
_warm_lock = threading.Lock()


def warm_instance() -> WarmInstance:
    """This instance's state, created on the first event that needs it."""
    global _warm
    with _warm_lock:
        if _warm is None:
            _warm = WarmInstance.from_env(os.environ)
        return _warm


# --- The path of one event -----------------------------------------------------


def handle(data: Any, published_at: Any, topic: Any = None) -> None:
    """The path every message takes, whichever entry point received it: decode, report, and log the
    errors that make Pub/Sub deliver it again."""
    try:
        build = decode_build(data)
    except InvalidMessage as error:
        log("WARNING", f"Ignored a message that is not a Cloud Build notification: {error}")
        return
    fields = _log_fields(build)
    warm: WarmInstance | None = None
    try:
        warm = warm_instance()
        result = report_build(build, published_at, fields, delivered_from(topic), warm)
    except (ConfigurationError, TransientError) as error:
        severity, prefix = next((s, p) for kind, s, p in RAISED if isinstance(error, kind))
        said = f"{prefix}: {error}"
        log(severity, warm.masked(said) if warm else said, **(warm.masked(fields) if warm else fields))
        raise
    except Exception as error:  # a bug: its stack trace, once (Error Reporting groups it), never the event's data
        frames = "".join(traceback.format_tb(error.__traceback__, limit=-20))  # frames only: not its message
        trace = f"Traceback (most recent call last):\n{frames}{type(error).__name__}"
        log("ERROR", f"Unexpected {type(error).__name__}; will retry\n{trace}", **fields)
        raise RuntimeError(f"unexpected {type(error).__name__}: its stack trace is logged above") from None
    log(result.severity, warm.masked(result.message), **warm.masked(fields))


# How an error that makes Pub/Sub deliver the event again is logged: the first kind that matches.
RAISED = (
    (ConfigurationError, "ERROR", "Configuration error"),
    (UntrustedCertificate, "ERROR", "Will retry"),  # nothing reaches that server until someone acts
    (TransientError, "WARNING", "Will retry"),
)


# Bitbucket's refusals of a status that only the build's author can mend (a value Bitbucket finds invalid, a repository
# that does not exist or that the credential cannot see), logged as WARNINGs: any build could otherwise page whoever
# runs the relay. So is a 403 under a key the build chose (_BITBUCKET_KEY: another account's status holds it). Any other
# refusal (a 403 under the trigger's key: the credential may not write, or another account wrote the trigger's
# statuses) is the operator's, an ERROR.
REFUSED_FOR_THE_BUILD = frozenset({400, 404})


def delivered_from(topic: Any) -> str | None:
    """The project of the topic a delivery names (`projects/P/topics/T`, or a CloudEvent source of that
    topic); None when it names none (a local run, a push to the function's root)."""
    match = TOPIC_RE.fullmatch(topic) if isinstance(topic, str) else None
    return match["project"] if match else None


def refused_origin(build: Mapping[str, Any], delivered: str | None, config: Config) -> Skip | None:
    """A delivery speaks for the project of the topic it was published to, never for the project its Build
    claims: whoever can publish to one project's topic must not write another project's statuses. A delivery
    that names no topic (a local run) speaks for its Build's project, unless the deployment serves only some."""
    if delivered is None:
        if config.build_projects:
            return Skip("the delivery names no topic, and this deployment serves only the projects of "
                        "BUILD_PROJECTS, so nothing is sent", "WARNING")  # fmt: skip
        return None
    claimed = _text(build.get("projectId"))
    if claimed != delivered:
        return Skip(f"the build claims project {loggable(claimed, 64)!r} but was published to project {delivered!r}'s"
                    " topic, so nothing is sent", "WARNING")  # fmt: skip
    if config.build_projects and delivered not in config.build_projects:
        return Skip(f"project {delivered!r} is not one this deployment serves (BUILD_PROJECTS)", "WARNING")
    return None


class Result(NamedTuple):
    """What became of one message, as its log line says it (SKIPPED, REFUSED, DROPPED or REPORTED), and the
    outcome when it was reported."""

    kind: str
    severity: str
    message: str
    outcome: Outcome | None = None


SKIPPED, REFUSED, DROPPED, REPORTED = "skipped", "refused", "dropped", "reported"


def report_build(
    build: Mapping[str, Any], published_at: Any, fields: dict[str, Any], delivered: str | None, warm: WarmInstance
) -> Result:
    """Translate one decoded Build, find where it goes and report it there, within the event's deadline and
    for the project it speaks for; says what became of it, and adds what it found to the log fields."""
    with event_scope(warm.config.event_deadline_seconds, delivered or _text(build.get("projectId"))):
        published = parse_time(published_at)
        if published_at and not published:
            shown = loggable(str(published_at), 60)
            log("WARNING", f"The publish time {shown!r} does not parse: no age cutoff or stale-message rule", **fields)
        if published and (old := too_old(published, warm.config)):
            return Result(SKIPPED, "WARNING", old)
        if refused := refused_origin(build, delivered, warm.config):
            return Result(SKIPPED, refused.severity, f"Refused: {refused.reason}")
        # A build may show one of the function's own credentials (in its failure, a command): never even a part of it
        # is shown, so it is masked before the texts are clipped — again when this event read the credentials.
        build = warm.masked(build)
        decision = _translated(build, warm)
        if not isinstance(decision, Skip) and (again := warm.masked(build)) != build:
            build, decision = again, _translated(again, warm)
        if isinstance(decision, Skip):
            return Result(SKIPPED, decision.severity, f"Skipped: {decision.reason}")
        fields.update(_log_fields(build, decision))
        if warm.tests is not None and (sources := test_sources(build)):
            decision = tested(decision, build, sources, warm, fields)
        try:
            return post(decision, published, warm, fields, bool(_text(substitutions(build).get("_BITBUCKET_KEY"))))
        except NotServed as error:  # the document changed while the event was on its way
            return Result(SKIPPED, "INFO", f"Skipped: {error}")


def _translated(build: Mapping[str, Any], warm: WarmInstance) -> Update | Skip:
    decision = translate(build, warm.config)
    return decision if isinstance(decision, Skip) else resolve(decision, warm)


def tested(update: Update, build: Mapping[str, Any], sources: TestSources, warm: WarmInstance,
           fields: dict[str, Any]) -> Update:  # fmt: skip
    """The update with the build's test results. They never cost the status: whatever goes wrong in reading or
    showing them leaves them out with a WARNING, which names an unexpected exception's type and where it was raised
    (never its message: it may quote a file), so that a bug is seen."""
    if warm.tests is None:
        return update
    try:
        step = failed_step(build)
        directory = step.directory if isinstance(step, FailedStep) else ""
        results = warm.tests.read(sources, directory, warm.keyring.secret_values())
        return with_tests(update, results) if results is not None and results.total else update
    except Exception as error:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f"{posixpath.basename(frame.filename)} line {frame.lineno}, in {frame.name}"
        log("WARNING", f"Test results left out: unexpected {type(error).__name__} ({where})", **fields)
        return update


def too_old(published: datetime, config: Config) -> str | None:
    """Why an event is too old to apply, or None."""
    age = (datetime.now(UTC) - published).total_seconds()
    if age <= config.max_event_age_seconds:
        return None
    return f"Ignored an event published {format_duration(age)} ago (older than MAX_EVENT_AGE_SECONDS)"


def resolve(update: Update, warm: WarmInstance) -> Update | Skip:
    """Where the update goes: a connected repository looked up with Cloud Build's API, then only the
    repositories an entry of the credentials serves, each on its entry's site; or why nowhere."""
    target = update.target
    if target.connected:
        try:
            remote = warm.cloud_build.remote_uri(target.connected)
        except NotLocated as error:
            return Skip(str(error), "WARNING")
        if remote is not None:
            found = repository_at(remote)
            repository = valid_repository(found) if found else None
            if repository is None:
                return Skip(f"the build's connected repository {loggable(remote)!r} is not on Bitbucket")
            target = replace(target, candidates=(repository,))
        elif not target.candidates:
            return Skip("the build's connected repository has no REPO_FULL_NAME substitution to fall back on")
        kept = allowed(target, warm.config)
        if isinstance(kept, Skip):
            return kept
        target = kept
    served = []
    for repository in target.candidates:
        entry = warm.keyring.entry_for(repository)
        if entry:  # an SSH URL's host becomes the entry's server
            served.append(replace(repository, server=entry.server, ssh_host=None))
    if not served:
        names = ", ".join(loggable(r.shown()) for r in target.candidates)
        return Skip(f"no entry of the credentials serves repository {names}, so nothing is sent")
    return replace(update, target=replace(target, candidates=tuple(served)))


def post(
    update: Update, published: datetime | None, warm: WarmInstance, fields: dict[str, Any], key_chosen: bool = False
) -> Result:
    """Report the update and say what became of it; a refusal is acknowledged, as an ERROR only when the operator
    must mend it (`key_chosen`: the build chose the status's key, _BITBUCKET_KEY)."""
    shown = f"{update.status.state} ({loggable(update.status.description, DESCRIPTION_MAX)})"
    try:
        outcome = warm.reporter.report(update, published)
    except Rejected as error:
        for_the_build = error.status in REFUSED_FOR_THE_BUILD or (error.status == 403 and key_chosen)
        severity = "WARNING" if for_the_build else "ERROR"
        return Result(REFUSED, severity, f"Bitbucket refused the status: {error}")
    except RateLimited as error:
        if update.status.is_final:
            raise  # redelivered until the budget allows it
        return Result(DROPPED, "WARNING", f"Did not post {shown}: {error}; a later state of the build supersedes it")
    repository = outcome.repository
    entry = warm.keyring.entry_for(repository)
    fields.update(
        repository=repository.full_name, server=repository.server, credential=entry.position if entry else None
    )
    said = f"Posted {shown}" if outcome.status == POSTED else f"Did not post {shown}: {outcome.status}"
    if not outcome.report:
        return Result(REPORTED, "INFO", said, outcome)
    refused = REPORT_REFUSED in outcome.report or ANNOTATIONS_REFUSED in outcome.report
    written = outcome.report.startswith(REPORT_WRITTEN)
    fields["report"] = "refused" if REPORT_REFUSED in outcome.report else "written" if written else "skipped"
    return Result(REPORTED, "WARNING" if refused else "INFO", f"{said}; {outcome.report}", outcome)


# --- Entry points ------------------------------------------------------------


def build_status(event: Mapping[str, Any], context: Any) -> None:
    """1st gen background function (--entry-point build_status)."""
    data = event.get("data") if isinstance(event, dict) else None
    resource = getattr(context, "resource", None)
    handle(data, getattr(context, "timestamp", None), _dict(resource).get("name") or resource)


def build_status_cloudevent(cloud_event: Any) -> None:
    """2nd gen CloudEvent function (--entry-point build_status_cloudevent)."""
    message = _dict(_dict(getattr(cloud_event, "data", None)).get("message"))
    published = message.get("publishTime") or cloud_event.get("time")
    handle(message.get("data"), published, cloud_event.get("source"))
