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
import json
import os
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

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
from resync.deployment import deployment_env, permissions, run_env
from resync.listing import ListingError, UsageError, builds_since, rfc3339, since_time
from resync.share import CALLS_PER_BUILD, Allowance, ResyncJira, ShareSpent, Told, current_told, warm_instance
from resync.verdicts import CORRECTED, FAILED, LEFT, NOT_REACHED, RIGHT, RUNNING, SKIPPED, SUPERSEDED

DEFAULT_SHARE = 0.5
# Bitbucket Cloud's allowance per account or OAuth consumer; an access token's own X-RateLimit-Limit replaces
# it once Bitbucket has answered. Data Center servers document none: admins who turn rate limiting on set it.
DEFAULT_HOURLY_BUDGET = 1000
DEFAULT_WORKERS = 8  # builds at once: 300 stuck builds take 18 s against a site answering in 150 ms (4: 35 s)
LOCATION_RE = re.compile(r"[a-z][a-z0-9-]{0,62}", re.ASCII)
SUPERSEDED_SAID = "a newer build of the same status is resynced instead"
RUNNING_SAID = "still running: its live events report it"


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

    token = current_told.set(told)
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
        current_told.reset(token)
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
