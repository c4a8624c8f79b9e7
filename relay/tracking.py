"""After the status and its report: the build on the Jira issues it implements (Jira's builds), and, when it is a
deployment, the deployment on them (Jira's deployments) and on its commit on a Data Center server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relay.errors import JiraRefused, RateLimited, Rejected, TransientError
from relay.issue_keys import issue_keys, message_keys, named_keys
from relay.lru import Lru
from relay.reporting import ALREADY_SHOWN, POSTED
from relay.tracked import environment_of, tracked_build

if TYPE_CHECKING:
    from collections.abc import Mapping
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

MEMORY = 4096  # commits whose message, and entities whose latest state sent, are remembered


@dataclass(frozen=True)
class Tracked:
    """What became of the trackers: said in the event's log line (a refusal an ERROR: the operator must act)."""

    said: str = ""
    refused: bool = False


@dataclass
class Tracking:
    """Jira is told after Bitbucket, never instead: a transient failure raises so the event is delivered again (and
    Bitbucket, which already shows the state, is not written again); a refused Jira credential is the operator's."""

    jira: Jira
    keyring: Keyring
    budget: Budget
    cloud: BitbucketCloud
    data_center: BitbucketDataCenter
    _messages: Lru = field(default_factory=lambda: Lru(MEMORY))  # (repository, commit) → (its message,)
    _sent: Lru = field(default_factory=lambda: Lru(MEMORY))  # what Jira has of an entity → the state's sequence

    def track(self, update: Update, build: Mapping[str, Any], outcome: Outcome) -> Tracked:
        repository = outcome.repository
        site: Site = self.cloud if repository.server is None else self.data_center
        entries = self.keyring.jira_entries_for(repository)
        deployed = self._deployment(update, build, outcome, repository) if repository.server else ""
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
        tracked = tracked_build(update, build, keys, site.page(repository), site.page(repository, branch))
        if not keys or tracked is None:  # a build that names no issue sends nothing to Jira
            return Tracked(deployed)
        said, refused = [deployed] if deployed else [], False
        for entry in entries:
            try:
                said.append(self._tell(entry, tracked))
            except JiraRefused as error:
                said.append(str(error))
                refused = True
        return Tracked("; ".join(s for s in said if s), refused)

    def _tell(self, entry: JiraEntry, tracked: TrackedBuild) -> str:
        """The build (and its deployment) on the entry's site, unless this instance already told it this state."""
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
            said += f"; it knows no issue {', '.join(answer.unknown_keys[:10])}"
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
            known = (message,)
            self._messages.put((repository, commit), known)
        return message_keys(known[0])

    def _deployment(self, update: Update, build: Mapping[str, Any], outcome: Outcome, repository: Repository) -> str:
        """The deployment on its commit on a Data Center server: written with its status — when the status is
        posted, or when its final state is (already) shown — so it never goes back either."""
        if environment_of(build) is None:
            return ""
        news = outcome.status == POSTED or (outcome.status == ALREADY_SHOWN and update.status.is_final)
        tracked = tracked_build(update, build, (), "", None)
        if not news or tracked is None or tracked.environment is None:
            return ""
        try:
            self.data_center.write_deployment(repository, update.target.commit, update.status, tracked)
        except RateLimited:
            return "its deployment skipped: the hourly budget of its credential is spent"
        except Rejected as error:
            return f"the Data Center server refused its deployment: {error}"
        return f"its deployment to {tracked.environment.name} written"
