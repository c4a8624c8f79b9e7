"""Each credential's share of its hourly budget, and the clients that keep to it (Bitbucket's, Jira's)."""

from __future__ import annotations

import contextvars
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from resync.verdicts import FAILED, LEFT, NOT_REACHED

CALLS_PER_BUILD = 3  # a read, the status, the report: reserved before a build's first call with a credential


class ShareSpent(Exception):
    """This run's share of a credential's hourly budget is spent: the build is left for a later run."""


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


current_told: contextvars.ContextVar[Told | None] = contextvars.ContextVar("told", default=None)
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
        told = current_told.get() or Told()
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
        warm.tracking.jira = ResyncJira(jira.api_url, jira.session, jira.timeout, jira.keyring)
        warm.tracking.budget = MessageReads(budget)
    return warm
