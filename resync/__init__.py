"""Resync: heal Bitbucket from Cloud Build's own record.

    make resync PROJECT=acme-ci REGION=europe-west1 SINCE=24h   (or 7d, 90m, or a time: 2026-11-28T09:00:00Z)

Lists the builds created since then in each location (Cloud Build's `projects.locations.builds.list`,
filtered on create_time, paged), oldest first, and passes each one through the path a Pub/Sub message
takes (`relay.event.report_build`), as if its current state had just been published: never backwards and the
newest build winning hold as for live events, so a run over statuses that are right changes nothing and
costs one read each. It runs with the person's own Google credentials (application default credentials)
and the deployment's Bitbucket credentials (its environment, read from `gcloud functions describe`; a
secret the deployment mounts as a file is read with Secret Manager's API instead).

Each credential spends at most a share of its hourly budget (half by default): before a build's first call
with a credential, the calls it may make are reserved; once the share is spent, or Bitbucket says the
budget is nearly spent (X-RateLimit-NearLimit) or answers 429, the credential's remaining builds are left
for a later run, and the summary says `SINCE=` the first build not done. A host that does not answer (a
Data Center server on a private network) is tried once: its builds are reported as not reached.

The listing is read page by page and only the newest build of each status is kept, compact (the fields the
function's path reads, compressed): a day of a busy project fits in a small machine's memory. A listing
that repeats a page token, or has not ended after PAGES_MAX pages, is stopped.

A build's Jira side (relay.tracking: its issues, Jira's builds and deployments, a Data Center commit's deployment)
comes with it, after its status: each Jira entry serving it is told of its final state, its calls counted per entry
(Jira publishes no budget: its 429 stops telling that entry for the run); what Jira is not told is a failure, or
left for a later run, beside the status's own verdict. The read of its commit's message (the issues it names) is
reserved with the build's calls.

A dry run writes nothing, so it reads nothing only a write needs: no failed step's log, no repository's
visibility (both only go into a report), no commit's message, and nothing of Jira.

Exit status: 0 all done; 1 a failure; 2 resync cannot run (configuration, usage, a listing it cannot follow);
3 builds left for a later run or not reached.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import re
import sys
import threading
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlencode

from tqdm import tqdm

if TYPE_CHECKING:
    import requests

import relay.bitbucket
import relay.budget
import relay.cloud_build
import relay.config
import relay.credentials
import relay.decoding
import relay.errors
import relay.event
import relay.jira
import relay.reporting
import relay.repository
import relay.text
import relay.tracked
import relay.translate
import relay.transport
import relay.warm

DEFAULT_SHARE = 0.5
# Bitbucket Cloud's allowance per account or OAuth consumer; an access token's own X-RateLimit-Limit replaces
# it once Bitbucket has answered. Data Center servers document none: admins who turn rate limiting on set it.
DEFAULT_HOURLY_BUDGET = 1000
CALLS_PER_BUILD = 3  # a read, the status, the report: reserved before a build's first call with a credential
# and besides, when the build may be told to Jira, the read of its commit's message (the issues it names), and when it
# deploys, its deployment on a Data Center commit
PAGE_SIZE = 100
# The most builds one listing gives a run (a dry run over 100,000 listed builds peaks at 427 MiB, docs/performance.md),
# and so the most pages: a listing that has not ended by then is stopped as one that never would.
LISTED_MAX = 100_000
PAGES_MAX = LISTED_MAX // PAGE_SIZE
DEFAULT_WORKERS = 8  # builds at once: 300 stuck builds take 18 s against a site answering in 150 ms (4: 35 s)
LOCATION_RE = re.compile(r"[a-z][a-z0-9-]{0,62}", re.ASCII)
AGO_RE = re.compile(r"(?P<count>\d{1,5})(?P<unit>[mhd])", re.ASCII)
UNITS = {"m": "minutes", "h": "hours", "d": "days"}

RIGHT, CORRECTED, SUPERSEDED, RUNNING, SKIPPED, NOT_REACHED, LEFT, FAILED = (
    "already right",
    "corrected",
    "superseded",
    "running",
    "skipped",
    "not reached",
    "left for a later run",
    "failed",
)
SUPERSEDED_SAID = "a newer build of the same status is resynced instead"
RUNNING_SAID = "still running: its live events report it"


class UsageError(Exception):
    """The command line asks for something resync cannot do."""


class ShareSpent(Exception):
    """This run's share of a credential's hourly budget is spent: the build is left for a later run."""


class ListingError(Exception):
    """Cloud Build's listing cannot be followed to its end (a page token repeated, or no end after PAGES_MAX pages)."""


# --- The deployment's environment ---------------------------------------------------


def deployment_env(function: Mapping[str, Any], project: str) -> dict[str, str]:
    """The environment a deployed function runs with (`gcloud functions describe --format=json`, 2nd gen), its
    credentials as resync reads them: a secret mounted as a file, or set as BITBUCKET_CREDENTIALS, becomes
    CREDENTIALS_SECRET, read with Secret Manager's API."""
    service = relay.text.as_mapping(function.get("serviceConfig"))
    env = {str(k): str(v) for k, v in relay.text.as_mapping(service.get("environmentVariables")).items()}
    for secret in service.get("secretEnvironmentVariables") or []:
        if relay.text.as_mapping(secret).get("key") == "BITBUCKET_CREDENTIALS":
            env["CREDENTIALS_SECRET"] = _secret_name(secret, secret.get("version"), project)
    path = env.pop("BITBUCKET_CREDENTIALS_FILE", None)
    if path:
        env["CREDENTIALS_SECRET"] = _mounted_secret(service.get("secretVolumes") or [], path, project)
    return env


def _mounted_secret(volumes: list[Any], path: str, project: str) -> str:
    """The secret version mounted at `path`; a volume that names no versions mounts the latest as a file named
    after the secret."""
    for volume in map(relay.text.as_mapping, volumes):
        mount = relay.text.as_text(volume.get("mountPath")).rstrip("/")
        versions = volume.get("versions") or [{"path": volume.get("secret"), "version": "latest"}]
        for version in map(relay.text.as_mapping, versions):
            if f"{mount}/{relay.text.as_text(version.get('path')).lstrip('/')}" == path:
                return _secret_name(volume, version.get("version"), project)
    raise relay.errors.ConfigurationError(
        f"the deployment reads BITBUCKET_CREDENTIALS_FILE={path}, which no secret mounts"
    )


def _secret_name(secret: Mapping[str, Any], version: Any, project: str) -> str:
    owner = relay.text.as_text(secret.get("projectId")) or project
    name, version = relay.text.as_text(secret.get("secret")), relay.text.as_text(version) or "latest"
    return f"projects/{owner}/secrets/{name}/versions/{version}"


def run_env(base: Mapping[str, str], deployed: Mapping[str, str] | None) -> dict[str, str]:
    """The person's environment, with the deployment's settings and credential source in place of their own."""
    if deployed is None:
        return dict(base)
    sources = (*relay.credentials.SINGLE_VARIABLES, *relay.credentials.BUCKET_VARIABLES)
    return {**{k: v for k, v in base.items() if k not in sources}, **deployed}


def permissions(project: str, env: Mapping[str, str]) -> str:
    """What the person running resync needs, besides reading the deployment (roles/cloudfunctions.viewer)."""
    needs = [f"cloudbuild.builds.list on {project} (roles/cloudbuild.builds.viewer)"]
    if env.get("CREDENTIALS_SECRET"):
        needs.append(f"secretmanager.versions.access on {env['CREDENTIALS_SECRET'].split('/versions/')[0]} "
                     "(roles/secretmanager.secretAccessor)")  # fmt: skip
    if env.get("SECRETS_BUCKET"):
        needs.append(f"storage.objects.get on gs://{env['SECRETS_BUCKET']} (roles/storage.objectViewer) and "
                     f"decrypt on {env.get('KMS_CRYPTO_KEY_ID')} (roles/cloudkms.cryptoKeyDecrypter)")  # fmt: skip
    needs.append("for connected repositories, cloudbuild.repositories.get (roles/cloudbuild.connectionViewer)")
    return "Resync runs with your application default credentials and needs " + "; ".join(needs) + "."


# --- Cloud Build's record ---------------------------------------------------------------


def since_time(text: str, now: datetime) -> datetime:
    """SINCE: an age (90m, 24h, 7d) or an RFC 3339 time (a date alone is its midnight, UTC)."""
    if match := AGO_RE.fullmatch(text.strip()):
        return now - timedelta(**{UNITS[match["unit"]]: int(match["count"])})
    parsed = relay.decoding.parse_time(text)
    if parsed is None:
        raise UsageError(f"SINCE={text!r} is neither an age (90m, 24h, 7d) nor a time (2026-11-28T09:00:00Z)")
    return parsed


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def builds_since(
    cloud_build: relay.cloud_build.CloudBuild, project: str, locations: list[str], since: datetime
) -> Iterator[dict[str, Any]]:
    """Every build created at or after `since` in those locations, as the pages arrive, each once."""
    seen: set[str] = set()
    for location in locations:
        for build in _listed(cloud_build, project, location, since):
            if (build_id := relay.text.as_text(build.get("id"))) not in seen:
                seen.add(build_id)
                yield build


def _listed(
    cloud_build: relay.cloud_build.CloudBuild, project: str, location: str, since: datetime
) -> Iterator[dict[str, Any]]:
    session = cloud_build.authorized()
    if session is None:
        raise relay.errors.ConfigurationError(
            "no Google credentials: run `gcloud auth application-default login` (resync uses them to list builds)"
        )
    where = f"projects/{project}/locations/{location}"
    query = {"filter": f'create_time>="{rfc3339(since)}"', "pageSize": PAGE_SIZE}
    tokens: set[str] = set()
    for _ in range(PAGES_MAX):
        response = cloud_build.get(session, f"{cloud_build.api_url}/v1/{where}/builds?{urlencode(query)}")
        if response.status_code in (401, 403):
            raise relay.errors.ConfigurationError(
                f"Cloud Build's API answered {response.status_code} to listing the builds of {where}: "
                "you need cloudbuild.builds.list (roles/cloudbuild.builds.viewer)"
            )
        if not response.ok:
            raise relay.errors.TransientError(f"Cloud Build's API answered {response.status_code} to listing {where}")
        page = relay.transport.json_body(response)
        yield from (b for b in page.get("builds") or [] if isinstance(b, dict) and relay.text.as_text(b.get("id")))
        token = relay.text.as_text(page.get("nextPageToken"))
        if not token:
            return
        if token in tokens:
            raise ListingError(
                f"Cloud Build's listing of the builds of {where} gave a page token it had given before, so it would "
                f"never end: stopped after {len(tokens) + 1} pages"
            )
        tokens.add(token)
        query["pageToken"] = token
    raise ListingError(
        f"Cloud Build's listing of the builds of {where} had not ended after {PAGES_MAX:,} pages ({LISTED_MAX:,} "
        "builds, the most a run lists of one location): stopped; resync a shorter period (a later SINCE)"
    )


# --- Each credential's share of its budget, and the client that keeps to it -------------


@dataclass
class Claims:
    """One build's claims: the calls it reserves of each credential it uses, the credentials it claimed, and whether
    its commit's message (read for Jira) is among the calls reserved and not read yet."""

    calls: int = CALLS_PER_BUILD
    secrets: set[str] = field(default_factory=set)
    message: bool = False


_claims: contextvars.ContextVar[Claims | None] = contextvars.ContextVar("claims", default=None)


class Allowance(relay.budget.Budget):
    """The function's budget rule, and this run's share of each credential's hourly budget: a build reserves
    what it may cost before its first call with a credential; none is started once the share is spent or
    Bitbucket says the budget is nearly spent."""

    def __init__(self, share: float, hourly: int, cooldown: float) -> None:
        super().__init__(cooldown)
        self.share, self.hourly = share, hourly
        self.spent: Counter[str] = Counter()  # credential secret → calls made this run
        self.reserved: Counter[str] = Counter()
        self.limits: dict[str, int] = {}  # credential secret → its X-RateLimit-Limit
        self.stopped: dict[str, str] = {}  # credential secret → why no build is started with it any more
        self.entries: dict[str, relay.credentials.Credential] = {}
        self._guard = threading.Lock()

    def note(self, entry: relay.credentials.Credential, headers: Mapping[str, str]) -> None:
        limit = headers.get("X-RateLimit-Limit", "")
        with self._guard:
            self.spent[entry.secret] += 1
            if limit.isdigit():
                self.limits[entry.secret] = int(limit)
            if headers.get("X-RateLimit-NearLimit", "").lower() == "true":
                said = f"Bitbucket says the hourly budget of credential entry {entry.position} is nearly spent"
                self.stopped.setdefault(entry.secret, said)
        super().note(entry, headers)

    def spare(self, entry: relay.credentials.Credential | None) -> bool:
        """A call beyond a build's own (its report's annotations, a repository's visibility) only within the share."""
        if entry is None or not super().spare(entry):
            return entry is None
        with self._guard:
            spent = self.spent[entry.secret] + self.reserved[entry.secret]
            return entry.secret not in self.stopped and spent + 1 <= self.allowed(entry)

    def message(self, entry: relay.credentials.Credential | None) -> bool:
        """Whether the current build may read its commit's message (for Jira) with `entry`: the read it reserved,
        once, unless Bitbucket stopped the credential since; else as any call beyond a build's own."""
        claims = _claims.get()
        if entry is not None and claims is not None and claims.message and entry.secret in claims.secrets:
            with self._guard:
                if entry.secret not in self.stopped:
                    claims.message = False
                    return True
        return self.spare(entry)

    def allowed(self, entry: relay.credentials.Credential) -> int:
        return int(self.share * self.limits.get(entry.secret, self.hourly))

    def claim(self, entry: relay.credentials.Credential) -> None:
        """Before the current build's first call with `entry`: reserve its calls, or raise ShareSpent."""
        claims = _claims.get()
        if claims is None or entry.secret in claims.secrets:
            return
        with self._guard:
            self.entries[entry.secret] = entry
            if entry.secret in self.stopped:
                raise ShareSpent(self.stopped[entry.secret])
            if self.spent[entry.secret] + self.reserved[entry.secret] + claims.calls > self.allowed(entry):
                raise ShareSpent(f"this run's share of credential entry {entry.position}'s hourly budget is spent "
                                 f"({self.allowed(entry)} calls)")  # fmt: skip
            self.reserved[entry.secret] += claims.calls
        claims.secrets.add(entry.secret)

    def refused(self, entry: relay.credentials.Credential) -> None:
        """Bitbucket answered 429 to the credential: its hourly budget is spent."""
        with self._guard:
            self.stopped.setdefault(
                entry.secret, f"Bitbucket answered 429 to credential entry {entry.position}: its hourly budget is spent"
            )

    @contextmanager
    def build(self, calls: int = CALLS_PER_BUILD, message: bool = False) -> Iterator[None]:
        """One build's calls: it reserves `calls` of each credential it uses (`message`: its commit's message among
        them), given back when it ends (its calls were counted as made)."""
        claims = Claims(calls, message=message)
        token = _claims.set(claims)
        try:
            yield
        finally:
            _claims.reset(token)
            with self._guard:
                for secret in claims.secrets:
                    self.reserved[secret] -= calls

    def usage(self) -> list[str]:
        with self._guard:
            entries = sorted(self.entries.values(), key=lambda e: e.position)
            return [f"credential entry {e.position}: {self.spent[e.secret]} of {self.allowed(e)} calls"
                    for e in entries]  # fmt: skip


@dataclass
class ResyncClient(relay.bitbucket.Client):
    """The function's client, keeping to the allowance, and trying a site that did not answer only once."""

    unreached: set[str] = field(default_factory=set)

    def send_as(
        self, entry: relay.credentials.Credential, method: str, url: str, body: Any, params: Any, header: str
    ) -> Any:
        origin = relay.transport.origin_of(url)
        if origin in self.unreached:
            raise relay.errors.Unreachable(f"{origin} did not answer earlier in this run", origin)
        assert isinstance(self.budget, Allowance)
        self.budget.claim(entry)
        try:
            response = super().send_as(entry, method, url, body, params, header)
        except relay.errors.Unreachable:
            self.unreached.add(origin)
            raise
        if response.status_code == 429:
            self.budget.refused(entry)
        return response


class DryRunClient(ResyncClient):
    """Reads as a resync does, and writes nothing: a status or report it would write is only counted as such."""

    def write(self, repository: relay.repository.Repository, method: str, url: str, body: Any) -> None:
        return None

    def delete(self, repository: relay.repository.Repository, url: str) -> None:
        return None


class MessageReads(relay.budget.Budget):
    """The allowance as the Jira side of the function's path asks it before reading a build's commit's message
    (relay.tracking): the read the build reserved is its own, so no build is told to Jira without the issues its
    commit names merely because the share was nearly spent (Jira would ignore the same state sent again with them)."""

    def __init__(self, allowance: Allowance) -> None:
        super().__init__(allowance.cooldown)
        self.allowance = allowance

    def nearly_spent(self, entry: relay.credentials.Credential | None) -> bool:
        return self.allowance.nearly_spent(entry)

    def spare(self, entry: relay.credentials.Credential | None) -> bool:
        return self.allowance.message(entry)

    def note(self, entry: relay.credentials.Credential, headers: Mapping[str, str]) -> None:
        self.allowance.note(entry, headers)


@dataclass
class Told:
    """What one build's Jira side came to: whether Jira was told of it (and rejected it), and what it was not told:
    (FAILED, LEFT or NOT_REACHED, why)."""

    told: bool = False
    rejected: bool = False
    problems: list[tuple[str, str]] = field(default_factory=list)


_told: contextvars.ContextVar[Told | None] = contextvars.ContextVar("told", default=None)
_jira_entry: contextvars.ContextVar[int] = contextvars.ContextVar("jira_entry", default=0)


@dataclass
class ResyncJira(relay.jira.Jira):
    """The function's Jira client as a resync runs it: each entry's calls counted; an entry that Jira answers 429
    (after the retries inside the call) or that cannot be reached is told nothing more in this run, its builds left
    for a later run, as a Bitbucket credential is. Whatever Jira is not told is said in the build's verdict and raised
    as a refusal, which the function's path says and goes on from: the build's status is already done."""

    calls: Counter[int] = field(default_factory=Counter, init=False)  # Jira entry position → calls made
    stopped: dict[int, tuple[str, str]] = field(default_factory=dict, init=False)  # position → (LEFT …, why)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False)

    def post_build(self, entry: relay.credentials.JiraEntry, build: Any) -> relay.jira.JiraAnswer:
        post = super().post_build
        return self._sent(entry, lambda: post(entry, build))

    def post_deployment(self, entry: relay.credentials.JiraEntry, build: Any) -> relay.jira.JiraAnswer:
        post = super().post_deployment
        return self._sent(entry, lambda: post(entry, build))

    def _sent(self, entry: relay.credentials.JiraEntry, post: Any) -> relay.jira.JiraAnswer:
        told = _told.get() or Told()
        with self._guard:
            stopped = self.stopped.get(entry.position)
        if stopped is not None:
            told.problems.append(stopped)
            raise relay.errors.JiraRefused(stopped[1])
        token = _jira_entry.set(entry.position)
        try:
            answer: relay.jira.JiraAnswer = post()
        except relay.errors.Unreachable as error:
            problem = (NOT_REACHED, f"Jira entry {entry.position} ({entry.site}): {error}; not tried again in this run")
            told.problems.append(self._stop(entry, problem))
            raise relay.errors.JiraRefused(problem[1]) from None
        except (relay.errors.TransientError, relay.errors.JiraRefused) as error:
            with self._guard:  # a 429 stopped the entry (send); any other failure is this build's
                problem = self.stopped.get(entry.position) or (FAILED, str(error))
            told.problems.append(problem)
            raise relay.errors.JiraRefused(problem[1]) from None
        finally:
            _jira_entry.reset(token)
        told.told = True
        told.rejected = told.rejected or not answer.accepted
        return answer

    def _stop(self, entry: relay.credentials.JiraEntry, problem: tuple[str, str]) -> tuple[str, str]:
        with self._guard:
            return self.stopped.setdefault(entry.position, problem)

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        position = _jira_entry.get()
        response = super().send(method, url, **kwargs)
        with self._guard:
            self.calls[position] += 1
            if response.status_code == 429:
                said = f"Jira answered 429 to Jira entry {position}: nothing more is sent to it in this run"
                self.stopped.setdefault(position, (LEFT, said))
        return response

    def usage(self) -> list[str]:
        with self._guard:
            return [f"Jira entry {position}: {count} calls" for position, count in sorted(self.calls.items())]


def warm_instance(env: Mapping[str, str], budget: Allowance, dry_run: bool) -> relay.warm.WarmInstance:
    """The function's instance as a resync (or doctor) runs it: its budget and client, no report owed for a status
    already shown. A dry run writes nothing, so it reads nothing that only goes into what it would write: no failed
    step's log (Cloud Logging), no repository's visibility (which decides whether that log may be shown), no
    build's test results (JUnit files in Cloud Storage: their counts end a final state's description, which never
    decides whether a status is corrected), and nothing of Jira's side (no commit's message, no Jira, no Data Center
    deployment). A resync tells Jira through the function's own path, with ResyncJira and MessageReads."""
    client = DryRunClient if dry_run else ResyncClient
    warm = relay.warm.WarmInstance.from_env(env, budget=budget, client_type=client, reports_for_shown=False)
    if dry_run:
        warm.reporter.logs = None
        warm.tests = None
        warm.tracking = None
    elif warm.tracking is not None:
        jira = warm.tracking.jira
        warm.tracking.jira = ResyncJira(jira.api_url, jira.session, jira.timeout)
        warm.tracking.budget = MessageReads(budget)
    return warm


# --- One build -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """A listed build as resync holds it: its id, when it was created, and what the function's path reads of it
    (relay.decoding.essentials), compressed JSON."""

    id: str
    created: str
    data: bytes

    @classmethod
    def of(cls, build: Mapping[str, Any]) -> Listed:
        essentials = json.dumps(relay.decoding.essentials(build), separators=(",", ":")).encode()
        return cls(
            relay.text.as_text(build.get("id")),
            relay.text.as_text(build.get("createTime")),
            zlib.compress(essentials, 1),
        )

    def build(self) -> dict[str, Any]:
        build: dict[str, Any] = json.loads(zlib.decompress(self.data))
        return build

    def order(self) -> tuple[datetime, str]:
        return (relay.decoding.parse_time(self.created) or datetime.min.replace(tzinfo=UTC), self.id)


@dataclass(frozen=True)
class Verdict:
    """What became of one build: its kind (RIGHT, CORRECTED ...), what to say of it, the change made."""

    build_id: str
    created: str  # its createTime, as listed
    kind: str
    said: str = ""
    change: str = ""  # "INPROGRESS → SUCCESSFUL"
    problem: str = ""  # a corrected status whose report was refused
    told: Told | None = None  # its Jira side, when the function's path reached it


@dataclass
class Plan:
    """Of the builds of one status (repository, commit, key: the branch is an attribute of the status), only the
    newest is resynced: what it shows is what the status must show; the others are superseded as they are
    listed. A newest build still running is left to its live events, so resync writes final states only (a final
    state cannot move its own build's status backwards). A build that translates to nothing goes on, to be
    skipped with the function's own reason."""

    config: relay.config.Config
    newest: dict[tuple[Any, ...], tuple[Listed, bool]] = field(default_factory=dict)  # status → (build, final)
    superseded: list[Verdict] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # every listed build's id → createTime

    def add(self, build: Mapping[str, Any]) -> None:
        listed = Listed.of(build)
        self.created[listed.id] = listed.created
        update = relay.translate.translate(build, self.config)
        status = _status_of(listed.id, update)
        final = not (isinstance(update, relay.translate.Update) and not update.status.is_final)
        kept = self.newest.get(status)
        if kept is not None and kept[0].order() > listed.order():
            self.superseded.append(Verdict(listed.id, listed.created, SUPERSEDED, SUPERSEDED_SAID))
            return
        if kept is not None:
            self.superseded.append(Verdict(kept[0].id, kept[0].created, SUPERSEDED, SUPERSEDED_SAID))
        self.newest[status] = (listed, final)

    def kept(self) -> Iterator[dict[str, Any]]:
        """Each build kept (the newest of each status, each build that translates to nothing), as the function's
        path reads it, decompressed one at a time."""
        for listed, _ in self.newest.values():
            yield listed.build()

    def decided(self) -> tuple[list[Listed], list[Verdict]]:
        """The builds to resync, oldest first, and what was decided of the others."""
        todo, decided = [], list(self.superseded)
        for listed, final in sorted(self.newest.values(), key=lambda kept: kept[0].order()):
            if final:
                todo.append(listed)
            else:
                decided.append(Verdict(listed.id, listed.created, RUNNING, RUNNING_SAID))
        return todo, decided


def plan(builds: Iterable[Mapping[str, Any]], config: relay.config.Config) -> Plan:
    planned = Plan(config)
    for build in builds:
        planned.add(build)
    return planned


def _status_of(build_id: str, update: relay.translate.Update | relay.errors.Skip) -> tuple[Any, ...]:
    if isinstance(update, relay.errors.Skip):
        return ("skipped", build_id)
    target, status = update.target, update.status
    return (target.connected, target.candidates, target.commit, status.key)


def resync_build(listed: Listed, warm: relay.warm.WarmInstance, project: str, published: str) -> Verdict:
    """The build's current state through the path of a Pub/Sub message published now."""
    build = listed.build()
    fields = relay.event.log_fields(build)
    assert isinstance(warm.reporter.budget, Allowance)
    told = Told()

    def verdict(kind: str, said: str, change: str = "", problem: str = "") -> Verdict:
        return Verdict(listed.id, listed.created, kind, said, change, problem, told)

    token = _told.set(told)
    try:
        # Its calls: a read, the status, the report; and when Jira may be told, its commit's message; when it
        # deploys, its deployment on a Data Center commit (relay.tracking), each reserved.
        message = warm.tracking is not None and bool(warm.keyring.jira_entries())
        deploys = warm.tracking is not None and relay.tracked.environment_of(build) is not None
        with warm.reporter.budget.build(CALLS_PER_BUILD + message + deploys, message):
            result = relay.event.report_build(build, published, fields, project, warm)
    except (ShareSpent, relay.errors.RateLimited) as error:
        return verdict(LEFT, str(error))
    except relay.errors.Unreachable as error:
        return verdict(NOT_REACHED, str(error))
    except relay.errors.TransientError as error:  # a ConfigurationError stops the run
        return verdict(FAILED, str(error))
    finally:
        _told.reset(token)
    where = _where(fields)
    if result.kind == relay.event.REPORTED and result.outcome is not None:
        outcome = result.outcome
        if outcome.status == relay.reporting.POSTED:
            problem = result.message if relay.reporting.REPORT_REFUSED in outcome.report else ""
            change = f"{outcome.before or 'nothing'} → {fields['state']}"
            return verdict(CORRECTED, f"{where}: {change}", change, problem)
        if outcome.status == relay.reporting.BUDGET_SPENT:
            return verdict(LEFT, relay.reporting.BUDGET_SPENT)
        return verdict(RIGHT, where)
    if result.kind == relay.event.REFUSED:
        return verdict(FAILED, f"{where}: {result.message}")
    if result.kind == relay.event.DROPPED:
        return verdict(LEFT, result.message)
    return verdict(SKIPPED, result.message)


def _where(fields: Mapping[str, Any]) -> str:
    """The status, as a person finds it: site, repository, commit and trigger."""
    site = f"{fields['server']} " if fields.get("server") else ""
    trigger = fields.get("trigger") or fields.get("key")
    return f"{site}{fields.get('repository')}@{str(fields.get('commit'))[:12]} ({trigger})"


# --- A run -------------------------------------------------------------------------------------------


@dataclass
class Tally:
    seen: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    problems: int = 0
    first_not_done: Verdict | None = None  # the builds are done oldest first
    told: int = 0  # builds Jira was told of, by every entry serving them
    rejected: int = 0  # of which Jira rejected (it knows none of their issues)
    jira: Counter[str] = field(default_factory=Counter)  # builds Jira was not told of: FAILED, LEFT, NOT_REACHED

    def add(self, verdict: Verdict) -> None:
        self.seen += 1
        self.kinds[verdict.kind] += 1
        if verdict.change:
            self.changes[verdict.change] += 1
        self.problems += bool(verdict.problem)
        told = verdict.told or Told()
        self.told += told.told and not told.problems
        self.rejected += told.told and not told.problems and told.rejected
        for kind in dict.fromkeys(kind for kind, _ in told.problems):
            self.jira[kind] += 1
        not_done = verdict.kind in (LEFT, NOT_REACHED, FAILED) or told.problems
        if not_done and self.first_not_done is None:
            self.first_not_done = verdict

    def exit_status(self) -> int:
        if self.kinds[FAILED] or self.problems or self.jira[FAILED]:
            return 1
        return 3 if self.kinds[LEFT] or self.kinds[NOT_REACHED] or self.jira[LEFT] or self.jira[NOT_REACHED] else 0


class LogLines:
    """main.py's own log lines (JSON on stdout, for Cloud Logging): its warnings shown above the bar."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("severity") in ("WARNING", "ERROR"):
                tqdm.write(f"{entry['severity']}: {entry.get('message')}", file=sys.stderr)
        return len(text)

    def flush(self) -> None:
        return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make resync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, help="the project whose builds are listed (its ID)")
    parser.add_argument("--since", required=True, help="24h, 7d, 90m, or an RFC 3339 time")
    parser.add_argument("--locations", default="global", help="space-separated Cloud Build locations")
    parser.add_argument("--dry-run", action="store_true", help="list what would change; write nothing")
    parser.add_argument("--share", type=float, default=DEFAULT_SHARE, help="of each credential's hourly budget")
    parser.add_argument("--hourly-budget", type=int, default=DEFAULT_HOURLY_BUDGET, help="when Bitbucket says none")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="builds handled at once")
    parser.add_argument("--function-config", help="`gcloud functions describe --format=json` output; - for stdin")
    parser.add_argument("--function-project", help="the project the function is deployed in (default: --project)")
    return parser.parse_args(argv)


def run(argv: list[str], base_env: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    try:
        return _run(parse_args(argv), base_env, out)
    except UsageError as error:
        print(f"resync: {error}", file=sys.stderr)
        return 2
    except ListingError as error:
        print(f"resync stopped: {error}", file=sys.stderr)
        return 2
    except relay.errors.ConfigurationError as error:
        print(f"resync stopped: configuration error: {error}", file=sys.stderr)
        return 2
    except relay.errors.TransientError as error:
        print(f"resync stopped: {error}; run it again", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, base_env: Mapping[str, str], out: TextIO) -> int:
    project, locations = args.project, args.locations.split()
    function_project = args.function_project or project
    projects_valid = all(re.fullmatch(relay.config.PROJECT_ID_RE, p) for p in (project, function_project))
    if not projects_valid or not all(LOCATION_RE.fullmatch(x) for x in locations):
        raise UsageError("PROJECT and FUNCTION_PROJECT must be project IDs, LOCATIONS Cloud Build regions (global …)")
    if not 0 < args.share <= 1 or args.hourly_budget < 1 or args.workers < 1:
        raise UsageError("SHARE must be in (0, 1], HOURLY_BUDGET and WORKERS at least 1")
    now = datetime.now(UTC)
    since = since_time(args.since, now)
    env = run_env(base_env, _deployment(args.function_config, function_project))
    print(permissions(project, env), file=sys.stderr)
    config = relay.config.Config.from_env(env)
    budget = Allowance(args.share, args.hourly_budget, config.rate_limit_cooldown_seconds)
    warm = warm_instance(env, budget, args.dry_run)
    planned = plan(builds_since(warm.cloud_build, project, locations, since), config)
    for build_id, text in planned.created.items():  # a listed build's age is known before any status is compared
        if created := relay.decoding.parse_time(text):
            warm.reporter.memory.created.put((project, build_id), created)
    told = (
        "; Jira is told nothing, and no commit's message is read"
        if args.dry_run and warm.keyring.jira_entries()
        else ""
    )
    mode = f" (dry run: Bitbucket is read, nothing is written{told})" if args.dry_run else ""
    listed = len(planned.created)
    print(f"Resync of {project} since {rfc3339(since)} in {', '.join(locations)}: {listed} builds{mode}", file=out)
    todo, decided = planned.decided()
    tally = Tally()
    for verdict in decided:
        tally.add(verdict)
        if verdict.kind == RUNNING:
            print(f"{RUNNING}: build {verdict.build_id}: {verdict.said}", file=out)
    _each(todo, tally, warm, project, rfc3339(now), args, out)
    jira = warm.tracking.jira if warm.tracking is not None else None
    _summary(tally, budget, jira if isinstance(jira, ResyncJira) else None, args, out)
    return tally.exit_status()


def _deployment(path: str | None, project: str) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        return deployment_env(relay.text.as_mapping(json.loads(text)), project)
    except (OSError, ValueError) as error:
        raise relay.errors.ConfigurationError(f"the deployment's configuration cannot be read: {error}") from None


def _each(
    builds: list[Listed],
    tally: Tally,
    warm: relay.warm.WarmInstance,
    project: str,
    published: str,
    args: Any,
    out: TextIO,
) -> None:
    verb = "would correct" if args.dry_run else "corrected"
    with ThreadPoolExecutor(args.workers) as pool, redirect_stdout(LogLines()):
        bar = tqdm(total=tally.seen + len(builds), initial=tally.seen, unit="build", file=sys.stderr, disable=None)
        verdicts = pool.map(lambda b: resync_build(b, warm, project, published), builds)
        try:
            for verdict in verdicts:
                tally.add(verdict)
                if verdict.kind != RIGHT:
                    said = verb if verdict.kind == CORRECTED else verdict.kind
                    tqdm.write(f"{said}: build {verdict.build_id}: {verdict.said}", file=out)
                if verdict.problem:
                    tqdm.write(f"failed: build {verdict.build_id}: {verdict.problem}", file=out)
                for kind, said in verdict.told.problems if verdict.told else ():
                    tqdm.write(f"{kind}: build {verdict.build_id}: {said}", file=out)
                bar.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        finally:
            bar.close()


def _summary(tally: Tally, budget: Allowance, jira: ResyncJira | None, args: Any, out: TextIO) -> None:
    changes = "; ".join(f"{change}: {count}" for change, count in tally.changes.most_common())
    corrected = "would be corrected" if args.dry_run else "corrected"
    lines = [
        f"Builds seen: {tally.seen}",
        f"  statuses already right: {tally.kinds[RIGHT]}",
        f"  statuses {corrected}: {tally.kinds[CORRECTED]}" + (f" ({changes})" if changes else ""),
        f"  superseded by a newer build of the same status: {tally.kinds[SUPERSEDED]}",
        f"  still running, left to their live events: {tally.kinds[RUNNING]}",
        f"  skipped: {tally.kinds[SKIPPED]}",
        f"  not reached: {tally.kinds[NOT_REACHED]}",
        f"  left for a later run: {tally.kinds[LEFT]}",
        f"  failures: {tally.kinds[FAILED] + tally.problems + tally.jira[FAILED]}",
    ]
    if jira is not None and (jira.calls or tally.told or tally.jira):
        rejected = f" ({tally.rejected} of them rejected by Jira)" if tally.rejected else ""
        kinds = [kind for kind in (FAILED, LEFT, NOT_REACHED) if tally.jira[kind]]
        not_told = f"; not of {sum(tally.jira.values())} (" + ", ".join(f"{k}: {tally.jira[k]}" for k in kinds) + ")"
        lines.append(f"Jira: told of {tally.told} builds{rejected}" + (not_told if kinds else ""))
    usage = budget.usage()
    if usage:
        lines.append(f"Bitbucket calls ({args.share:g} of each credential's hourly budget): " + "; ".join(usage))
    if jira is not None and jira.calls:
        lines.append("Jira calls: " + "; ".join(jira.usage()))
    if tally.first_not_done is not None:
        since = tally.first_not_done.created
        lines.append(f"To continue, run resync again with SINCE={since} (the first build not done)")
    print("\n".join(lines), file=out)


def cli() -> int:
    return run(sys.argv[1:], os.environ)
