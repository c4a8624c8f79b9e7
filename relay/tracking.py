"""After the status and its report: the build on the Jira issues it implements (Jira's builds), and, when it is a
deployment, the deployment on them (Jira's deployments) and on its commit on a Data Center server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relay.errors import JiraRefused, RateLimited, Rejected, TransientError
from relay.issue_keys import TEXT_READ, issue_keys, message_keys, named_keys
from relay.logs import loggable
from relay.lru import Lru
from relay.reporting import POSTED
from relay.tracked import tracked_build

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from relay.bitbucket import Site
    from relay.bitbucket_cloud import BitbucketCloud
    from relay.bitbucket_data_center import BitbucketDataCenter
    from relay.budget import Budget
    from relay.credentials import JiraEntry, Keyring
    from relay.jira import Jira, JiraAnswer
    from relay.reporting import Outcome
    from relay.repository import Repository
    from relay.tracked import TrackedBuild
    from relay.translate import Update

MEMORY = 4096  # commits whose message, entities whose latest state sent, and deployments written, are remembered


@dataclass(frozen=True)
class Tracked:
    """What became of the trackers, said in the event's log line at `severity` (ERROR: the operator must act)."""

    said: str = ""
    severity: str = "INFO"


@dataclass
class Tracking:
    """Jira is told after Bitbucket, never instead: a transient failure of a final state raises once every entry was
    tried, so the event is delivered again (and Bitbucket, which already shows the state, is not written again); of
    a state in progress it is said, a later state telling Jira; a refused Jira credential is the operator's."""

    jira: Jira
    keyring: Keyring
    budget: Budget
    cloud: BitbucketCloud
    data_center: BitbucketDataCenter
    _messages: Lru = field(default_factory=lambda: Lru(MEMORY))  # (repository, commit) → (its message's start,)
    _sent: Lru = field(default_factory=lambda: Lru(MEMORY))  # what Jira has of an entity → the state's sequence
    _deployed: Lru = field(default_factory=lambda: Lru(MEMORY))  # a Data Center deployment → the phase written

    def track(self, update: Update, build: Mapping[str, Any], outcome: Outcome, known: Sequence[str]) -> Tracked:
        repository = outcome.repository
        site: Site = self.cloud if repository.server is None else self.data_center
        entries = self.keyring.jira_entries_for(repository)
        deployed = self._deployment(update, build, outcome, repository, known) if repository.server else ""
        if not entries:
            return Tracked(deployed)
        in_message = self._message_keys(site, repository, update)
        if in_message is None and update.status.is_final:
            # Jira keeps a state it was told, and ignores the same state told again: a final state told without the
            # message's issues would leave them out for good. Delivered again, once the message can be read.
            raise TransientError(
                "Jira is told of the build once its commit's message can be read: the hourly budget of its "
                "credential is nearly spent"
            )
        keys = issue_keys(named_keys(build, update.status.refname), in_message or [])
        branch = update.status.refname
        pages = site.page(repository), site.page(repository, branch)
        tracked = tracked_build(update, build, keys, *pages, known)
        if not keys or tracked is None:  # a build that names no issue sends nothing to Jira
            return Tracked(deployed)
        said, severity, later = [deployed] if deployed else [], "INFO", []
        for entry in entries:
            try:
                said.append(self._tell(entry, tracked, repository))
            except JiraRefused as error:
                said.append(str(error))
                severity = "WARNING" if error.status == 400 and severity != "ERROR" else "ERROR"
            except TransientError as error:  # the other entries are told all the same
                later.append(str(error))
        if later and update.status.is_final:
            raise TransientError("; ".join(later))
        said += [f"{failed}; a later state of the build tells it" for failed in later]
        return Tracked("; ".join(s for s in said if s), severity)

    def _tell(self, entry: JiraEntry, tracked: TrackedBuild, repository: Repository) -> str:
        """The build (and its deployment) on the entry's site, unless this instance already told it this state. When
        Atlassian refuses the entry's client id and secret, the document is read again once: they may be rotated."""
        try:
            return self._told(entry, tracked)
        except JiraRefused as error:
            if not error.token:
                raise
            self.keyring.read_again()
            again = [e for e in self.keyring.jira_entries_for(repository) if (e.site, e.client_id) == (entry.site,
                     entry.client_id) and e.secret != entry.secret]  # fmt: skip
            if not again:
                raise
            return self._told(again[0], tracked)

    def _told(self, entry: JiraEntry, tracked: TrackedBuild) -> str:
        told = []
        kinds = ("builds", "deployments") if tracked.environment else ("builds",)
        for kind in kinds:
            sent = (entry.site, entry.client_id, kind, tracked.pipeline_id, tracked.number)
            if (self._sent.get(sent) or 0) >= tracked.sequence:
                continue
            post = self.jira.post_build if kind == "builds" else self.jira.post_deployment
            answer = post(entry, tracked)
            self._sent.put(sent, tracked.sequence)
            told.append(self._answered(entry, kind, answer))
        return "; ".join(t for t in told if t)

    def _answered(self, entry: JiraEntry, kind: str, answer: JiraAnswer) -> str:
        """What Jira's answer says, in the event's log line: information, never retried."""
        where = f"Jira entry {entry.position}"
        said = f"{where} took the {kind[:-1]}" if answer.accepted else f"{where} rejected the {kind[:-1]}"
        if answer.rejected:
            said += f" ({'; '.join(answer.rejected)})"
        if answer.unknown_keys:
            said += f"; it knows no issue {', '.join(answer.unknown_keys)}"
        return said

    def _message_keys(self, site: Site, repository: Repository, update: Update) -> list[str] | None:
        """The keys the built commit's message names, read from Bitbucket once per commit per instance, after the
        statuses and only while the credential's budget has calls to spare; None when it was not read this time."""
        commit = update.target.commit
        known: tuple[str] | None = self._messages.get((repository, commit))
        if known is None:
            if not self.budget.spare(self.keyring.entry_for(repository)):
                return None
            try:
                message = site.commit_message(repository, commit) or ""
            except RateLimited:
                return None
            except Rejected:
                message = ""  # no message to be had (the credential may not read the commit): the other keys
            known = (message[: TEXT_READ + 1],)  # what is searched for keys, and no more, is kept
            self._messages.put((repository, commit), known)
        return message_keys(known[0])

    def _deployment(
        self, update: Update, build: Mapping[str, Any], outcome: Outcome, repository: Repository, known: Sequence[str]
    ) -> str:
        """The deployment on its commit on a Data Center server, never back to an earlier state: a final state is
        written (once), whatever the status; a state in progress only with its status posted (a later state may be
        shown), and not after a later one this instance wrote."""
        tracked = tracked_build(update, build, (), "", None, known)
        if tracked is None or tracked.environment is None:
            return ""
        deployment = (repository, update.target.commit, update.status.server_key, tracked.environment.name,
                      tracked.number)  # fmt: skip
        written: int = self._deployed.get(deployment) or 0
        news = update.status.is_final or outcome.status == POSTED
        if not news or written >= tracked.sequence:
            return ""
        try:
            self.data_center.write_deployment(repository, update.target.commit, update.status, tracked)
        except RateLimited:
            return "its deployment skipped: the hourly budget of its credential is spent"
        except Rejected as error:
            return f"the Data Center server refused its deployment: {error}"
        self._deployed.put(deployment, tracked.sequence)
        return f"its deployment to {loggable(tracked.environment.name, 60)} written"
