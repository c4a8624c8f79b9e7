from __future__ import annotations

import fnmatch
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from relay.errors import ConfigurationError
from relay.text import clip

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


DEFAULT_API_URL = "https://api.bitbucket.org/2.0"
DEFAULT_OAUTH_TOKEN_URL = "https://bitbucket.org/site/oauth2/access_token"  # noqa: S105 (a URL)
DEFAULT_CLOUD_BUILD_API_URL = "https://cloudbuild.googleapis.com"
DEFAULT_JIRA_API_URL = "https://api.atlassian.com"
DEFAULT_LOGGING_API_URL = "https://logging.googleapis.com"
DEFAULT_LOG_EXCERPT_LINES = 30  # the failed step's last lines a report shows
DEFAULT_LOG_WAIT_SECONDS = 6.0  # a log whose end is not in Cloud Logging yet is read again within this
DEFAULT_MAX_EVENT_AGE_SECONDS = 24 * 3600
DEFAULT_RETRY_BACKOFF_SECONDS = 0.5
DEFAULT_HTTP_TIMEOUT_SECONDS = 10.0  # read timeout of every outbound call
DEFAULT_EVENT_DEADLINE_SECONDS = 120.0  # the deployment's --timeout leaves room beyond it
DEFAULT_RATE_LIMIT_COOLDOWN_SECONDS = 600.0
CONNECT_TIMEOUT_SECONDS = 3.05
# A project ID, also a domain-scoped one (example.com:project); the lookbehind keeps a search linear.
PROJECT_ID = r"(?:(?<![a-z0-9.-])[a-z0-9.-]++:)?[a-z0-9][a-z0-9-]{0,62}"
PROJECT_ID_RE = f"(?a){PROJECT_ID}"
LOG_VIEW_RE = r"(?a)[A-Za-z0-9_-]{1,100}"


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
    jira_api_url: str = DEFAULT_JIRA_API_URL  # Atlassian's API: Jira's OAuth tokens, builds and deployments
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
        if view and not re.fullmatch(LOG_VIEW_RE, view):
            raise ConfigurationError("LOG_VIEW must be a log view's ID (letters, digits, '_' and '-')")
        repositories = Patterns(tuple(p for p in patterns if p))
        connections = max(cls.connections, _threads(env))
        projects = frozenset(env.get("BUILD_PROJECTS", "").replace(",", " ").split())
        if any(not re.fullmatch(PROJECT_ID_RE, p) for p in projects):
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
    "jira_api_url": "JIRA_API_URL",
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
        if not re.fullmatch(BUCKET_RE, bucket) or (project and not re.fullmatch(PROJECT_ID_RE, project)):
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
        raise ConfigurationError(f"{number.said()} (not {clip(raw, 40)!r})")
    return int(value) if number.whole else value


def validated_url(env: Mapping[str, str], name: str, default: str) -> str:
    url = env.get(name) or default
    parts = urlsplit(url)
    if parts.hostname and is_secure(parts.scheme, parts.hostname):
        return url.rstrip("/")
    raise ConfigurationError(f"{name} must be an https:// URL (plain http only for loopback)")


def is_secure(scheme: str, host: str) -> bool:
    """https, or plain http to this machine only (local runs and tests)."""
    return scheme == "https" or (scheme == "http" and _is_loopback(host))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


BUCKET_RE = r"(?a)[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"
