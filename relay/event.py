from __future__ import annotations

import posixpath
import re
import traceback
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from relay.config import PROJECT_ID
from relay.decoding import decode_build, parse_time, substituted_secrets, substitutions, trigger_name
from relay.errors import (
    ConfigurationError,
    InvalidMessage,
    NotLocated,
    NotServed,
    RateLimited,
    Rejected,
    Skip,
    TransientError,
    UntrustedCertificate,
)
from relay.logs import log, loggable
from relay.masking import known_secrets
from relay.reporting import ANNOTATIONS_REFUSED, POSTED, REPORT_ALREADY_WRITTEN, REPORT_REFUSED, REPORT_WRITTEN
from relay.repository import allowed, repository_at, valid_repository
from relay.scope import event_scope
from relay.status import DESCRIPTION_MAX, format_duration
from relay.text import as_text
from relay.translate import translate
from relay.warm import warm_instance

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from relay.config import Config
    from relay.junit import TestSources
    from relay.reporting import Outcome
    from relay.translate import Update
    from relay.warm import WarmInstance


# The topic a delivery came from: a CloudEvent's source, a 1st gen context's resource, a push request's path.
TOPIC_RE = rf"(?a)(?://pubsub\.googleapis\.com/)?projects/(?P<project>{PROJECT_ID})/topics/[^/]+"


def log_fields(build: Mapping[str, Any], update: Update | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "build_id": loggable(as_text(build.get("id")), 100) or None,
        "trigger": loggable(trigger_name(build) or as_text(build.get("buildTriggerId")), 100) or None,
        "build_status": loggable(as_text(build.get("status")), 40) or None,
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


def handle(data: Any, published_at: Any, topic: Any = None) -> None:
    """The path every message takes, whichever entry point received it: decode, report, and log the
    errors that make Pub/Sub deliver it again."""
    try:
        build = decode_build(data)
    except InvalidMessage as error:
        log("WARNING", f"Ignored a message that is not a Cloud Build notification: {error}")
        return
    fields = log_fields(build)
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
# runs the relay. So is a 403 where the build chose the key or the repository (chosen_by_the_build). Any other refusal
# (a 403 for a trigger's repository under the trigger's key: the credential may not write it, or another account wrote
# the trigger's statuses) is the operator's, an ERROR.
REFUSED_FOR_THE_BUILD = frozenset({400, 404})


def chosen_by_the_build(build: Mapping[str, Any], update: Update) -> bool:
    """Whether whoever ran the build chose where its status goes: a key (_BITBUCKET_KEY), a repository
    (_BITBUCKET_REPO), or any of it in a build no trigger made (gcloud builds submit names any source)."""
    subs = substitutions(build)
    named = as_text(subs.get("_BITBUCKET_KEY")) or update.target.origin == "substitution _BITBUCKET_REPO"
    return bool(named) or not as_text(build.get("buildTriggerId"))


def delivered_from(topic: Any) -> str | None:
    """The project of the topic a delivery names (`projects/P/topics/T`, or a CloudEvent source of that
    topic); None when it names none (a local run, a push to the function's root)."""
    match = re.fullmatch(TOPIC_RE, topic) if isinstance(topic, str) else None
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
    claimed = as_text(build.get("projectId"))
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
SEVERITIES = ("INFO", "WARNING", "ERROR")  # from the least


def report_build(
    build: Mapping[str, Any], published_at: Any, fields: dict[str, Any], delivered: str | None, warm: WarmInstance
) -> Result:
    """Translate one decoded Build, find where it goes and report it there, within the event's deadline and
    for the project it speaks for; says what became of it, and adds what it found to the log fields."""
    with event_scope(warm.config.event_deadline_seconds, delivered or as_text(build.get("projectId"))):
        published = parse_time(published_at)
        if published_at and not published:
            shown = loggable(str(published_at), 60)
            log("WARNING", f"The publish time {shown!r} does not parse: no age cutoff or stale-message rule", **fields)
        if published and (old := too_old(published, warm.config)):
            return Result(SKIPPED, "WARNING", old)
        if refused := refused_origin(build, delivered, warm.config):
            return Result(SKIPPED, refused.severity, f"Refused: {refused.reason}")
        if warm.keyring.source.local:  # read at once where that costs no client: its credentials are then masked
            warm.keyring.load()
        # A build may show one of the function's own credentials (in its failure, a command): they are masked in its
        # texts before these are clipped, so no part of one is shown — translated again if this event read them.
        secrets = warm.keyring.secret_values()
        decision = _translated(build, warm, secrets)
        if not isinstance(decision, Skip) and warm.keyring.secret_values() != secrets:
            decision = _translated(build, warm, warm.keyring.secret_values())
        if isinstance(decision, Skip):
            return Result(SKIPPED, decision.severity, f"Skipped: {decision.reason}")
        fields.update(log_fields(build, decision))
        if warm.tests is not None and decision.status.is_final:
            from relay.junit import test_sources  # with a final state: an event in progress loads no test results

            if sources := test_sources(build):
                decision = tested(decision, build, sources, warm, fields)
        chose = chosen_by_the_build(build, decision)
        try:
            result = post(decision, published, warm, fields, chose)
            return tracked(result, decision, build, warm, fields)
        except NotServed as error:  # the document changed while the event was on its way
            return Result(SKIPPED, "INFO", f"Skipped: {error}")


def tracked(
    result: Result, update: Update, build: Mapping[str, Any], warm: WarmInstance, fields: dict[str, Any]
) -> Result:
    """After Bitbucket, Jira (and a Data Center commit's deployment). A transient failure there is redelivered: the
    status, already shown, is said first, so the line that asks for redelivery is not all that is logged."""
    if result.outcome is None or warm.tracking is None:
        return result
    known = known_secrets([*warm.keyring.secret_values(), *substituted_secrets(build)])
    try:
        told = warm.tracking.track(update, build, result.outcome, known)
    except TransientError:
        log(result.severity, warm.masked(result.message), **warm.masked(fields))
        raise
    if not told.said:
        return result
    severity = max(told.severity, result.severity, key=SEVERITIES.index)
    return result._replace(severity=severity, message=f"{result.message}; {told.said}")


def _translated(build: Mapping[str, Any], warm: WarmInstance, secrets: Sequence[str]) -> Update | Skip:
    decision = translate(build, warm.config, secrets)
    return decision if isinstance(decision, Skip) else resolve(decision, warm)


def tested(update: Update, build: Mapping[str, Any], sources: TestSources, warm: WarmInstance,
           fields: dict[str, Any]) -> Update:  # fmt: skip
    """The update with the build's test results. They never cost the status: whatever goes wrong in reading or
    showing them leaves them out with a WARNING, which names an unexpected exception's type and where it was raised
    (never its message: it may quote a file), so that a bug is seen."""
    if warm.tests is None:
        return update
    from relay.junit import with_tests
    from relay.step_log import FailedStep, failed_step

    try:
        step = failed_step(build)
        directory = step.directory if isinstance(step, FailedStep) else ""
        secrets = [*warm.keyring.secret_values(), *substituted_secrets(build)]
        results = warm.tests.read(sources, directory, secrets)
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
    update: Update, published: datetime | None, warm: WarmInstance, fields: dict[str, Any], chose: bool = False
) -> Result:
    """Report the update and say what became of it; a refusal is acknowledged, as an ERROR only when the operator
    must mend it (`chose`: the build itself chose the status's key or repository)."""
    shown = f"{update.status.state} ({loggable(update.status.description, DESCRIPTION_MAX)})"
    try:
        outcome = warm.reporter.report(update, published)
    except Rejected as error:
        for_the_build = error.status in REFUSED_FOR_THE_BUILD or (error.status == 403 and chose)
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
    written = outcome.report.startswith((REPORT_WRITTEN, REPORT_ALREADY_WRITTEN))
    fields["report"] = "refused" if REPORT_REFUSED in outcome.report else "written" if written else "skipped"
    return Result(REPORTED, "WARNING" if refused else "INFO", f"{said}; {outcome.report}", outcome)
