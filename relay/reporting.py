from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from relay.cloud_logging import LogUnavailable
from relay.config import DEFAULT_LOG_EXCERPT_LINES
from relay.errors import RateLimited, Rejected, RepositoryNotFound, TransientError
from relay.lru import Lru
from relay.scope import current_project
from relay.states import FINAL_STATES, phase
from relay.status import build_at
from relay.text import as_text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from datetime import datetime
    from typing import Any

    from relay.bitbucket import RemoteStatus, Site
    from relay.bitbucket_cloud import BitbucketCloud
    from relay.bitbucket_data_center import BitbucketDataCenter
    from relay.budget import Budget
    from relay.cloud_build import CloudBuild
    from relay.cloud_logging import CloudLogging
    from relay.credentials import Keyring
    from relay.report import Report
    from relay.repository import Repository, Target
    from relay.status import CommitStatus
    from relay.translate import Update


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
REPORT_ALREADY_WRITTEN = "its Code Insights report already written"
ANNOTATIONS_REFUSED = "refused its annotations"
VISIBILITY_SECONDS = 600.0  # a repository's visibility, read for a failed step's lines, is read again after this


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

    def identities_locked(self) -> int:
        """How many status identities an event holds or awaits the lock of (none once every event is done)."""
        with self._guard:
            return len(self._locks)


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
            self.memory.created.put((current_project(), update.build_id), created)
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
        shown_created = self.memory.created.get((current_project(), last.build_id)) if last else None
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
            last = self.memory.shown.get(identity)
            if last is not None and not last.written_here and self._written(site, repository, commit, update.report):
                self._note(identity, update, reported=True, foreign_report=False)
                return REPORT_ALREADY_WRITTEN
            report = self.with_log(site, repository, update.report)
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

    def _written(self, site: Site, repository: Repository, commit: str, report: Report) -> bool:
        """Whether the build's report is on Bitbucket already (another instance wrote it, and the event is delivered
        again): one read rather than writing it again."""
        shown = site.read_report(repository, commit, report)
        return shown is not None and as_text(shown.get("link")) == report.link

    def _note(self, identity: tuple[str, ...], update: Update, **changes: bool) -> None:
        last = self.memory.shown.get(identity)
        if last is not None and last.build_id == update.build_id:
            self.memory.shown.put(identity, last._replace(**changes))

    def with_log(self, site: Site, repository: Repository, report: Report) -> Report:
        """The report with its failed step's last lines and their annotations, where they may be shown: never for a
        public repository unless LOG_EXCERPTS=all, never with LOG_EXCERPTS=off."""
        from relay.step_log import Excerpt, excerpt_of  # with the first report: an event in progress reads no log

        source = report.log
        if source is None or self.logs is None or self.log_excerpts == "off":
            return report
        if isinstance(source, str):
            return report.with_excerpt(Excerpt(note=source))
        if self.log_excerpts == "private" and not self._is_private(site, repository):
            return report.with_excerpt(Excerpt(note="the repository is not known to be private (LOG_EXCERPTS=private)"))
        try:
            lines, complete = self.logs.step_lines(current_project(), source)
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
        created = self.memory.created.get((current_project(), shown_id))
        if created is None and shown_id != build_id and (ref := build_at(remote.url)):
            created = self.cloud_build.create_time(ref)
            if created:
                self.memory.created.put((current_project(), shown_id), created)
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
