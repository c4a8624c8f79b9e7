from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from relay.config import is_secure
from relay.decoding import substitutions
from relay.errors import Skip
from relay.logs import loggable
from relay.text import as_mapping, as_text

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from relay.config import Config


BRANCH_MAX = 255

SHA_RE = r"(?a)[0-9a-f]{40}"
# Workspace IDs and repository slugs: ASCII letters, digits, '-', '_' and '.'
# (slugs only), never starting with '.', so no value can add a path segment.
WORKSPACE_RE = r"(?a)[A-Za-z0-9_][A-Za-z0-9_-]{0,99}"
SLUG_RE = r"(?a)[A-Za-z0-9_][A-Za-z0-9._-]{0,99}"
# Data Center project keys (upper case in the API), or ~user for a personal repository.
PROJECT_RE = r"(?a)[A-Za-z][A-Za-z0-9_]{0,127}|~[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"
# The user info of a clone URL (https://user:password@host/...), removed before a URL is matched.
USER_INFO_RE = r"(?<=://)[^/?#]*@"
BITBUCKET_URL_RE = (
    r"(?i)(?:https://|ssh://)?(?:(?<![^@/])[^@/]++@)?bitbucket\.org[:/]"
    r"(?P<workspace>[^/]+)/(?P<slug>[^/]+?)(?:\.git)?/?"
)
# Data Center clone URLs: https://host[/context]/scm/PROJECT/slug.git and ssh://git@host[:port]/PROJECT/slug.git
SERVER_HTTPS_URL_RE = r"(?P<server>https?://[^/?#@]+(?:/[^?#@]*?)?)/scm/(?P<project>[^/]+)/(?P<slug>[^/]+?)(?:\.git)?/?"
SERVER_SSH_URL_RE = r"ssh://(?P<host>[^/:@]+)(?::\d+)?/(?P<project>[^/]+)/(?P<slug>[^/]+?)(?:\.git)?/?"
SERVER_HOST_RE = r"(?a)[a-z0-9.-]+|\[[0-9a-f:.]+\]"
# A path segment of a value from a build is never made of dots alone: a URL normaliser (urllib3's, before any request
# leaves) removes `.` and `..` with the segment before, so the request would go to another path.
NOT_DOTS = r"(?!\.+(?:/|$))"
SERVER_PATH_RE = rf"(?a)(?:/{NOT_DOTS}[A-Za-z0-9._~-]+)*"  # a context path, or none
DEFAULT_PORTS = {"https": 443, "http": 80}
CONNECTED_RE = (
    rf"(?a)projects/{NOT_DOTS}[A-Za-z0-9._-]+/locations/[A-Za-z0-9-]+/connections/{NOT_DOTS}[A-Za-z0-9._-]+"
    rf"/repositories/{NOT_DOTS}[A-Za-z0-9._-]+"
)
OTHER_HOSTS = ("github.com", "gitlab.com", "gitlab.")
MIRROR_PREFIX = "bitbucket_"


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


def locate(build: Mapping[str, Any]) -> Target | Skip:
    """Find the Bitbucket repository, commit and branch, in the order docs/what-reviewers-see.md gives: the
    _BITBUCKET_REPO substitution, the git source, a Cloud Source Repositories mirror, a Cloud Build connection."""
    for finder in (_from_substitutions, _from_git_source, _from_mirror, _from_connection):
        found = finder(build, substitutions(build))
        if isinstance(found, Skip):
            return found
        if found is not None:
            return _target(found, as_text(substitutions(build).get("TAG_NAME")))
    source = as_mapping(build.get("source"))
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
    return as_mapping(as_mapping(build.get("source")).get(declared)), as_mapping(
        as_mapping(build.get("sourceProvenance")).get(resolved)
    )


def _from_substitutions(build: Mapping[str, Any], subs: Mapping[str, Any]) -> Evidence | Skip | None:
    explicit = as_text(subs.get("_BITBUCKET_REPO"))
    if not explicit:
        return None
    server = as_text(subs.get("_BITBUCKET_SERVER"))
    normalized = normalized_server(server) if server else None
    if server and not normalized:
        return Skip(f"_BITBUCKET_SERVER {loggable(server)!r} is not an https:// URL", "WARNING")
    commit = as_text(subs.get("_BITBUCKET_COMMIT")) or as_text(subs.get("COMMIT_SHA"))
    branch = as_text(subs.get("_BITBUCKET_BRANCH")) or as_text(subs.get("BRANCH_NAME"))
    owner, _, slug = explicit.partition("/")
    return Evidence("substitution _BITBUCKET_REPO", [Repository(owner, slug, normalized)], commit, branch)


def _from_git_source(build: Mapping[str, Any], subs: Mapping[str, Any]) -> Evidence | Skip | None:
    declared, resolved = _source(build, "gitSource", "resolvedGitSource")
    if not (url := as_text(resolved.get("url")) or as_text(declared.get("url"))):
        return None
    found = repository_at(url)
    if found is None:
        return Skip(f"the build's git source {loggable(url)!r} is not on bitbucket.org or a Bitbucket server")
    commit = as_text(subs.get("COMMIT_SHA")) or as_text(resolved.get("revision")) or as_text(declared.get("revision"))
    return Evidence("gitSource", [found], commit, as_text(subs.get("BRANCH_NAME")))


def _from_mirror(build: Mapping[str, Any], subs: Mapping[str, Any]) -> Evidence | Skip | None:
    declared, resolved = _source(build, "repoSource", "resolvedRepoSource")
    mirror = as_text(resolved.get("repoName")) or as_text(declared.get("repoName"))
    if mirror and not mirror.startswith(MIRROR_PREFIX):
        return Skip(f"the build's mirror {loggable(mirror)!r} is not a Bitbucket mirror")
    if not mirror:
        return None
    commit = as_text(resolved.get("commitSha")) or as_text(subs.get("COMMIT_SHA"))
    branch = as_text(declared.get("branchName")) or as_text(subs.get("BRANCH_NAME"))
    splits = [Repository(owner, slug) for owner, slug in mirror_splits(mirror[len(MIRROR_PREFIX) :])]
    return Evidence("Cloud Source Repositories mirror", splits, commit, branch, mirror=mirror)


def _from_connection(build: Mapping[str, Any], subs: Mapping[str, Any]) -> Evidence | Skip | None:
    connected, resolved = _source(build, "connectedRepository", "resolvedConnectedRepository")
    if not connected:
        return None
    name = as_text(connected.get("repository"))
    if not re.fullmatch(CONNECTED_RE, name):
        return Skip(f"the build's connected repository {loggable(name)!r} is not a repository resource name", "WARNING")
    if any(host in as_text(subs.get("_HEAD_REPO_URL")).lower() for host in OTHER_HOSTS):
        return Skip("the build's connected repository is not on Bitbucket")
    # REPO_FULL_NAME is only the fallback for Bitbucket Cloud when Cloud Build's API cannot be asked.
    owner, _, slug = as_text(subs.get("REPO_FULL_NAME")).partition("/")
    commit = as_text(subs.get("COMMIT_SHA")) or as_text(resolved.get("revision"))
    fallback = [Repository(owner, slug)] if owner else []
    return Evidence("Cloud Build connection", fallback, commit, as_text(subs.get("BRANCH_NAME")), connected=name)


def repository_at(url: str) -> Repository | None:
    """The repository of a clone URL on bitbucket.org or in the shape of a Data Center server's (user info
    such as https://jdoe@host/... ignored); None for any other URL. Its names are not checked yet (see
    `valid_repository`)."""
    url = re.sub(USER_INFO_RE, "", url, count=1)
    if match := re.fullmatch(BITBUCKET_URL_RE, url):
        return Repository(match["workspace"], match["slug"])
    if (match := re.fullmatch(SERVER_HTTPS_URL_RE, url)) and (server := normalized_server(match["server"])):
        return Repository(match["project"], match["slug"], server=server)
    if match := re.fullmatch(SERVER_SSH_URL_RE, url):
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
    if not is_secure(parts.scheme, host) or parts.username or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    if not re.fullmatch(SERVER_HOST_RE, netloc) or not re.fullmatch(SERVER_PATH_RE, path):
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
    if not re.fullmatch(SHA_RE, commit):
        return Skip(f"{found.origin} gives no full 40-hex commit SHA (got {loggable(commit, 80)!r})", "WARNING")
    ambiguous = found.mirror if len(candidates) > 1 else None  # which split works is learnt
    branch = refname(found.branch)
    tag_ref = None if branch or found.mirror else refname(tag)  # a mirror build's tag is not known
    return Target(candidates, commit, branch, found.origin, ambiguous or None, tag_ref, found.connected or None)


def valid_repository(repository: Repository) -> Repository | None:
    """The repository if its names cannot change the shape of a request path, else None."""
    if not re.fullmatch(SLUG_RE, repository.slug):
        return None
    if repository.on_cloud:
        return repository if re.fullmatch(WORKSPACE_RE, repository.owner) else None
    if not re.fullmatch(PROJECT_RE, repository.owner):
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
