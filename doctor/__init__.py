"""Doctor: what is wrong with a deployment, and the one thing to do about each.

    make doctor PROJECT=acme-ci REGION=europe-west1 [SINCE=24h] [FUNCTION_PROJECT=hub]

Run by a person with their own Google credentials, it reads the deployment as `make resync` does (`gcloud functions
describe`: its environment, where its credentials are) and checks, each with ✓ or ✗ and, for each ✗, the one thing
to do: the function's settings (as the function reads them, each alone and all together: one it refuses fails every
event, and doctor goes on without it); the function (active, runtime, THREADS equal to the concurrency, the timeout
above the event's deadline, retry on, its trigger, and for a hub its ingress and each served project's push
subscription); the credentials (the one source the function reads, readable, a valid document); each repository
built since SINCE (Cloud Build's list, kept as a resync keeps it: the newest build of each status, compressed): which
entry serves it and whether that entry can read it now (one read a repository); the statuses that disagree with
Cloud Build (what a dry-run resync would correct: one read a status, no log, no test file, no commit's message), with
the `make resync` that heals them; each Jira entry of the credentials (doctor.jira: a token, the site's cloud id, the
permission to send builds and deployments); and the function's own ERROR lines of the period, every one of them, and
its newest WARNING lines (Cloud Logging), grouped by message. It writes nothing anywhere, Jira included.

Exit status: 0 all hold; 1 something is wrong; 2 doctor itself cannot run (and why).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import relay.bitbucket
import relay.cloud_build
import relay.config
import relay.credentials
import relay.decoding
import relay.errors
import relay.event
import relay.repository
import relay.scope
import relay.step_log
import relay.text
import relay.translate
import relay.transport
import relay.warm
import resync
import resync.deployment
import resync.listing
import resync.share
import resync.verdicts
from doctor.jira import check_jira
from relay.text import as_mapping, as_text

GOOD, BAD = "\u2713", "\u2717"
RUNTIME = "python313"
DEFAULT_TIMEOUT_SECONDS = 60  # a function deployed without --timeout
CREDENTIALS_FIX = "store a new credential: make credentials PROJECT={project} < credentials.json"
CREDENTIAL_VARIABLES = (*relay.credentials.SINGLE_VARIABLES, *relay.credentials.BUCKET_VARIABLES)  # its one source
DEPLOY_SETTINGS = ("BUILD_PROJECTS", "LOG_EXCERPTS", "LOG_VIEW", "TEST_REPORT_BUCKETS")  # what make deploy takes
LINES_PAGE = 1000  # entries a page of Cloud Logging's entries.list (its most)
ERROR_PAGES_MAX = 10  # the ERROR lines of a period are read to their end, up to 10,000 of them


@dataclass
class Findings:
    """What doctor found: a line a check, ✓ or ✗ with the one thing to do."""

    out: TextIO
    wrong: int = 0
    lines: list[str] = field(default_factory=list)

    def good(self, what: str) -> None:
        print(f"{GOOD} {what}", file=self.out)

    def bad(self, what: str, fix: str) -> None:
        self.wrong += 1
        print(f"{BAD} {what}\n    \u2192 {fix}", file=self.out)


# --- the function ---------------------------------------------------------------------------------------------


def settings_of(described: Mapping[str, Any]) -> dict[str, str]:
    """The deployed function's own variables, its credential source left out (check_source reads it)."""
    variables = as_mapping(as_mapping(described.get("serviceConfig")).get("environmentVariables"))
    return {str(k): str(v) for k, v in variables.items() if k not in CREDENTIAL_VARIABLES}


def check_settings(
    found: Findings, deployed: Mapping[str, str], env: Mapping[str, str], project: str
) -> dict[str, str]:
    """The deployment's settings as the function reads them (relay.config.Config.from_env), each alone and then
    together: one it refuses fails every event with a configuration error, and so does a setting it refuses only with
    another (TEST_REPORT_BUCKETS naming no project, or a project outside BUILD_PROJECTS). Each refused setting is a
    failed check naming it, and the environment without it (its default in its place) is what the other checks run
    with; taken in order of their names, so of BUILD_PROJECTS and TEST_REPORT_BUCKETS the latter is refused."""
    refused: dict[str, str] = {}
    accepted: dict[str, str] = {}
    for name, value in sorted(deployed.items()):
        said = _refusal({name: value})
        if said is not None:
            refused[name] = f"the function refuses its setting {name}, so every event fails: {said}"
        elif (said := _refusal({**accepted, name: value})) is not None:
            others = " and ".join(o for o in accepted if _refusal({o: accepted[o], name: value})) or "the others"
            refused[name] = (
                f"the function refuses its setting {name} together with {others}, so every event fails: {said}"
            )
        else:
            accepted[name] = value
    for name, what in refused.items():
        setting = f" {name}=..." if name in DEPLOY_SETTINGS else f" (it sets {name} back to its default)"
        found.bad(what, f"deploy it again: make deploy PROJECT={project} REGION=...{setting}")
    if not refused:
        found.good("the function accepts its settings, each and together")
    return {name: value for name, value in env.items() if name not in refused}


def _refusal(env: Mapping[str, str]) -> str | None:
    """Why the function refuses these settings, or None when it takes them."""
    try:
        relay.config.Config.from_env(env)
    except relay.errors.ConfigurationError as error:
        return str(error)
    return None


def check_function(found: Findings, described: Mapping[str, Any], subscriptions: list[Any], project: str,
                   env: Mapping[str, str], config: relay.config.Config) -> None:  # fmt: skip
    """Deployed, active, its runtime, THREADS and concurrency, timeout, retry, trigger, ingress and subscriptions."""
    deploy = f"make deploy PROJECT={project} REGION=..."
    service, build = (
        relay.text.as_mapping(described.get("serviceConfig")),
        relay.text.as_mapping(described.get("buildConfig")),
    )
    trigger = relay.text.as_mapping(described.get("eventTrigger"))
    state = relay.text.as_text(described.get("state"))
    (found.good if state == "ACTIVE" else lambda w: found.bad(w, f"deploy it again: {deploy}"))(
        f"the function is deployed and {state.lower() or 'in no known state'}"
    )
    runtime = relay.text.as_text(build.get("runtime"))
    if runtime == RUNTIME:
        found.good(f"runtime {runtime}")
    else:
        found.bad(f"runtime {runtime or 'unknown'}, not {RUNTIME}", f"deploy it again: {deploy}")
    threads, concurrency = env.get("THREADS", ""), str(service.get("maxInstanceRequestConcurrency", ""))
    if threads and threads == concurrency:
        found.good(f"THREADS {threads} equal to the concurrency")
    else:
        found.bad(f"THREADS {threads or 'unset'}, a concurrency of {concurrency or 'unknown'}: events wait in a queue",
                  f"deploy it again (it sets both): {deploy}")  # fmt: skip
    deadline, timeout = config.event_deadline_seconds, service.get("timeoutSeconds")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        said = f"timeout {timeout:g} s"
    else:
        said, timeout = f"no timeout set, so the default of {DEFAULT_TIMEOUT_SECONDS} s", DEFAULT_TIMEOUT_SECONDS
    if timeout > deadline:
        found.good(f"{said}, above the event's deadline ({deadline:g} s)")
    else:
        found.bad(f"{said}, not above the event's deadline ({deadline:g} s): events are cut short",
                  f"deploy it again (--timeout=150s): {deploy}")  # fmt: skip
    if trigger.get("retryPolicy") == "RETRY_POLICY_RETRY":
        found.good("retry on: a failed event is delivered again")
    else:
        found.bad("retry off: an event that fails once is lost", f"deploy it again (--retry): {deploy}")
    if relay.text.as_text(trigger.get("pubsubTopic")) == f"projects/{project}/topics/cloud-builds":
        found.good(f"triggered by projects/{project}/topics/cloud-builds")
    else:
        found.bad(f"not triggered by projects/{project}/topics/cloud-builds", f"deploy it again: {deploy}")
    served = [p for p in env.get("BUILD_PROJECTS", "").replace(",", " ").split() if p != project]
    if served and relay.text.as_text(service.get("ingressSettings")) != "ALLOW_INTERNAL_ONLY":
        found.bad("the function takes traffic from outside the project", f"deploy it again: {deploy}")
    elif served:
        found.good("the function takes traffic from inside the project only (its push subscriptions)")
    for team in served:
        topic = f"projects/{team}/topics/cloud-builds"
        pushed = [s for s in map(as_mapping, subscriptions) if s.get("topic") == topic and _pushes_to(s, topic)]
        if pushed:
            found.good(f"{team}'s builds are pushed to the function ({relay.text.as_text(pushed[0].get('name'))})")
        else:
            found.bad(f"no push subscription brings {team}'s builds", f'deploy it again: {deploy} BUILD_PROJECTS="..."')


def _pushes_to(subscription: Mapping[str, Any], topic: str) -> bool:
    """Whether a push subscription's endpoint names the topic (functions-framework takes it from the path)."""
    return as_text(as_mapping(subscription.get("pushConfig")).get("pushEndpoint")).endswith(f"/{topic}")


# --- the credentials and the repositories -------------------------------------------------------------------


def function_env(described: Mapping[str, Any]) -> dict[str, str]:
    """The environment the deployed function reads: its variables, and each variable a secret sets (its value is not
    doctor's to read: the secret's name stands for it)."""
    service = as_mapping(described.get("serviceConfig"))
    env = {str(k): str(v) for k, v in as_mapping(service.get("environmentVariables")).items()}
    for secret in map(as_mapping, service.get("secretEnvironmentVariables") or ()):
        if key := as_text(secret.get("key")):
            owner, name = as_text(secret.get("projectId")) or "-", as_text(secret.get("secret")) or "-"
            env[key] = f"projects/{owner}/secrets/{name}/versions/{as_text(secret.get('version')) or 'latest'}"
    return env


def check_source(found: Findings, described: Mapping[str, Any], project: str) -> dict[str, str] | None:
    """The credential source as the function reads it (relay.credentials.credential_source of its environment, a
    secret set as a variable included): two sources, or a file no secret mounts, fail every event. Returns the
    source as doctor reads it (a mounted secret through Secret Manager's API), or None when the function has none."""
    fix = f"deploy it again, which configures one source: make deploy PROJECT={project} REGION=..."
    try:
        relay.credentials.credential_source(function_env(described))
    except relay.errors.ConfigurationError as error:
        found.bad(f"the function refuses its credential source, so every event fails: {error}", fix)
        return None
    try:
        deployed = resync.deployment.deployment_env(described, project)
    except relay.errors.ConfigurationError as error:
        found.bad(f"the function cannot read its credentials, so every event fails: {error}", fix)
        return None
    return {name: value for name, value in deployed.items() if name in CREDENTIAL_VARIABLES}


def check_credentials(
    found: Findings, env: Mapping[str, str], project: str
) -> tuple[relay.credentials.Credential | relay.credentials.JiraEntry, ...] | None:
    try:
        entries = relay.credentials.credential_source(env).fetch()
    except (relay.errors.ConfigurationError, relay.errors.TransientError) as error:
        found.bad(f"the credentials cannot be used: {error}", CREDENTIALS_FIX.format(project=project))
        return None
    found.good(f"the credentials are readable: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    return entries


def check_repositories(
    found: Findings, warm: relay.warm.WarmInstance, builds: Iterable[Mapping[str, Any]], project: str,
    function_project: str,
) -> None:  # fmt: skip
    """One read a repository: whether the entry serving it can read it now."""
    seen: dict[relay.repository.Repository, str] = {}
    for build in builds:
        with relay.scope.event_scope(warm.config.event_deadline_seconds, project):
            decision = relay.translate.translate(build, warm.config)
            if isinstance(decision, relay.translate.Update):
                try:
                    decision = relay.event.resolve(decision, warm)
                except relay.errors.TransientError as error:
                    found.bad(f"build {build.get('id')}: its repository could not be looked up ({error})",
                              "run make doctor again; if it stays, see the function's lines below")  # fmt: skip
                    continue
            if isinstance(decision, relay.errors.Skip):
                if "no entry of the credentials serves" in decision.reason:
                    name = decision.reason.split("repository ")[-1].split(",")[0]
                    if name not in seen.values():
                        seen[relay.repository.Repository(name, "")] = name
                        found.bad(f"{name}: no entry of the credentials serves it",
                                  "add an entry for it: make credentials PROJECT=... < credentials.json")  # fmt: skip
                continue
            for repository in decision.target.candidates[:1]:
                if repository not in seen:
                    seen[repository] = repository.shown()
                    probe(found, warm, repository, function_project)


def probe(
    found: Findings, warm: relay.warm.WarmInstance, repository: relay.repository.Repository, project: str
) -> None:
    site: relay.bitbucket.Site = warm.reporter.cloud if repository.server is None else warm.reporter.data_center
    name = repository.shown()
    try:
        entry, code = warm.reporter.cloud.client.answer(repository, site.repository_url(repository))
    except relay.errors.NotServed:
        found.bad(f"{name}: no entry of the credentials serves it", CREDENTIALS_FIX.format(project=project))
        return
    except relay.errors.UntrustedCertificate:
        found.bad(
            f"{name}: the server's TLS certificate is not trusted",
            'set "ca_certificate" of its entry to the PEM of the CA that signed it, then make credentials',
        )
        return
    except relay.errors.Unreachable as error:
        found.bad(
            f"{name}: {error.origin} could not be reached from here",
            "check the network (VPC connector or Direct VPC egress of the function, a firewall)",
        )
        return
    said = f"{name}: credential entry {entry.position}"
    if code == 200:
        found.good(f"{said} reads it")
    elif code == 401:
        found.bad(
            f"{said}: Bitbucket answered 401: the credential was revoked or expired",
            CREDENTIALS_FIX.format(project=project),
        )
    elif code == 403:
        found.bad(
            f"{said}: Bitbucket answered 403: the credential may not read it",
            "give it read on the repository (an access token's scope `repository`), then make credentials",
        )
    elif code == 404:
        found.bad(
            f"{said}: Bitbucket answered 404: the repository is not there, or the token does not reach it",
            "check the repository's name, and which repositories the token reaches",
        )
    else:
        found.bad(f"{said}: Bitbucket answered {code}", "run make doctor again; if it stays, see Bitbucket's status")


# --- statuses that disagree with Cloud Build -----------------------------------------------------------------


def check_statuses(found: Findings, warm: relay.warm.WarmInstance, planned: resync.Plan, args: Any) -> None:
    """What a dry-run resync would correct (one read a status)."""
    todo, _ = planned.decided()
    now = resync.listing.rfc3339(datetime.now(UTC))
    verdicts = [resync.resync_build(listed, warm, args.project, now) for listed in todo]
    wrong = [v for v in verdicts if v.kind == resync.verdicts.CORRECTED]
    if not wrong:
        found.good(f"every status shows its build's state ({len(verdicts)} checked)")
        return
    for verdict in wrong:
        print(f"    {verdict.said} (build {verdict.build_id})", file=found.out)
    since = min(wrong, key=lambda v: relay.decoding.parse_time(v.created) or datetime.max.replace(tzinfo=UTC)).created
    where = f" FUNCTION_PROJECT={args.function_project}" if args.function_project != args.project else ""
    found.bad(
        f"{len(wrong)} status{'es disagree' if len(wrong) > 1 else ' disagrees'} with Cloud Build",
        f"heal them: make resync PROJECT={args.project}{where} REGION={args.region} SINCE={since}",
    )


# --- the function's own lines --------------------------------------------------------------------------------


@dataclass
class Lines:
    """The function's log lines of one severity filter, grouped by (severity, first line of the message)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    last: dict[tuple[str, str], str] = field(default_factory=dict)  # its newest timestamp
    complete: bool = True  # every line of the filter was read

    def add(self, entry: Mapping[str, Any]) -> None:
        message = relay.text.as_text(
            relay.text.as_mapping(entry.get("jsonPayload")).get("message")
        ) or relay.text.as_text(entry.get("textPayload"))
        key = (
            relay.text.as_text(entry.get("severity")),
            relay.text.clip(message.splitlines()[0] if message else "", 200),
        )
        self.counts[key] += 1
        self.last.setdefault(key, relay.text.as_text(entry.get("timestamp")))

    def total(self) -> str:
        return f"{sum(self.counts.values()):,}" + ("" if self.complete else "+")


def read_lines(cloud_build: relay.cloud_build.CloudBuild, api_url: str, function_project: str, query: str,
               pages: int) -> Lines | int:  # fmt: skip
    """The lines the query selects, newest first, at most `pages` pages of them; or what Cloud Logging answered."""
    session = cloud_build.authorized()
    body: dict[str, Any] = {"resourceNames": [f"projects/{function_project}"], "filter": query,
                            "orderBy": "timestamp desc", "pageSize": LINES_PAGE}  # fmt: skip
    lines = Lines()
    for _ in range(pages):
        response = cloud_build.request(session, "POST", f"{api_url}/v2/entries:list", json=body)
        if not response.ok:
            return response.status_code
        page = relay.transport.json_body(response)
        for entry in map(relay.text.as_mapping, page.get("entries") or ()):
            lines.add(entry)
        body["pageToken"] = relay.text.as_text(page.get("nextPageToken"))
        if not body["pageToken"]:
            return lines
    lines.complete = False
    return lines


def check_lines(
    found: Findings, cloud_build: relay.cloud_build.CloudBuild, api_url: str, function_project: str, service: str,
    since: datetime,
) -> None:  # fmt: skip
    """Every ERROR line of the period (up to ERROR_PAGES_MAX pages), asked for on its own so that no number of newer
    warnings hides one; and the newest page of WARNING lines."""
    period = resync.listing.rfc3339(since)
    where = (f'resource.type="cloud_run_revision" AND resource.labels.service_name={relay.step_log.quoted(service)} '
             f"AND timestamp>={relay.step_log.quoted(period)}")  # fmt: skip
    errors = read_lines(cloud_build, api_url, function_project, f"{where} AND severity>=ERROR", ERROR_PAGES_MAX)
    warnings = read_lines(cloud_build, api_url, function_project, f"{where} AND severity=WARNING", 1)
    if isinstance(errors, int) or isinstance(warnings, int):
        code = errors if isinstance(errors, int) else warnings
        found.bad(
            f"the function's lines could not be read (Cloud Logging answered {code})",
            f"give yourself roles/logging.viewer on {function_project}",
        )
        return
    for lines in (errors, warnings):
        for (severity, message), count in lines.counts.most_common():
            print(f"    {count:>4} \u00d7 {severity:<7} {message}  (last {lines.last[(severity, message)]})",
                  file=found.out)  # fmt: skip
    shown = "" if warnings.complete else f", the newest {LINES_PAGE:,} shown"
    if errors.counts:
        plural = "s" if errors.total() != "1" else ""
        found.bad(f"the function logged {errors.total()} ERROR line{plural} since {period}",
                  "each says what to do: fix it, then make resync the period")  # fmt: skip
    else:
        found.good(f"no ERROR line of the function since {period} ({warnings.total()} warnings{shown})")


# --- a run -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", required=True, help="the project whose builds are checked")
    parser.add_argument("--function-project", help="where the function is deployed (default: --project)")
    parser.add_argument("--region", required=True)
    parser.add_argument("--since", default="24h", help="24h, 7d, 90m, or an RFC 3339 time")
    parser.add_argument("--locations", default="", help="Cloud Build locations (default: global and --region)")
    parser.add_argument("--function-config", required=True, help="`gcloud functions describe --format=json`; -: stdin")
    parser.add_argument("--subscriptions", help="`gcloud pubsub subscriptions list --format=json` of its project")
    return parser.parse_args(argv)


def run(argv: list[str], base_env: Mapping[str, str], out: TextIO = sys.stdout) -> int:
    try:
        args = parse_args(argv)
        args.function_project = args.function_project or args.project
        return _run(args, base_env, Findings(out))
    except (resync.listing.UsageError, resync.listing.ListingError) as error:
        print(f"doctor cannot run: {error}", file=sys.stderr)
        return 2
    except relay.errors.ConfigurationError as error:
        print(f"doctor cannot run: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, base_env: Mapping[str, str], found: Findings) -> int:
    described = relay.text.as_mapping(_read_json(args.function_config))
    subscriptions = _read_json(args.subscriptions) if args.subscriptions else []
    print(f"The function {relay.text.as_text(described.get('name')) or '(not found)'}", file=found.out)
    settings = settings_of(described)
    env = check_settings(found, settings, resync.deployment.run_env(base_env, settings), args.function_project)
    config = relay.config.Config.from_env(env)
    check_function(found, described, subscriptions if isinstance(subscriptions, list) else [],
                   args.function_project, env, config)  # fmt: skip
    cloud_build = relay.cloud_build.CloudBuild(config.cloud_build_api_url, config.timeout)
    if cloud_build.authorized() is None:
        raise relay.errors.ConfigurationError(
            "no Google credentials: run `gcloud auth application-default login` (doctor reads Cloud Build, Cloud "
            "Logging and the credentials' source with them)"
        )
    source = check_source(found, described, args.function_project)
    env = {**env, **(source or {})}
    entries = None if source is None else check_credentials(found, env, args.function_project)
    now = datetime.now(UTC)
    since = resync.listing.since_time(args.since, now)
    locations = args.locations.split() or ["global", args.region]
    # As a resync holds them: the newest build of each status, compressed, the others let go as the pages arrive.
    planned = resync.plan(resync.listing.builds_since(cloud_build, args.project, locations, since), config)
    print(f"\nBuilds of {args.project} since {resync.listing.rfc3339(since)}: {len(planned.created)}", file=found.out)
    if entries is not None:
        budget = resync.share.Allowance(1.0, resync.DEFAULT_HOURLY_BUDGET, 600.0)
        with quiet():
            warm = resync.share.warm_instance(env, budget, dry_run=True)
            check_repositories(found, warm, planned.kept(), args.project, args.function_project)
            check_statuses(found, warm, planned, args)
        check_jira(
            found, config, entries, planned.kept(), args.project, args.function_project, resync.listing.rfc3339(since)
        )
    print("\nThe function's own warnings and errors:", file=found.out)
    service = relay.text.as_text(described.get("name")).rsplit("/", 1)[-1] or "bitbucket-build-status"
    check_lines(found, cloud_build, config.logging_api_url, args.function_project, service, since)
    print(
        f"\n{'Something is wrong: see each ' + BAD + ' above.' if found.wrong else 'All checks hold.'}", file=found.out
    )
    return 1 if found.wrong else 0


@contextmanager
def quiet() -> Iterator[None]:
    """main.py's own JSON lines are not doctor's: they go nowhere (not kept, however many builds are checked)."""
    with open(os.devnull, "w") as nowhere, redirect_stdout(nowhere):
        yield


def _read_json(path: str) -> Any:
    try:
        return json.loads(sys.stdin.read() if path == "-" else Path(path).read_text())
    except (OSError, ValueError) as error:
        raise relay.errors.ConfigurationError(f"the deployment's description cannot be read: {error}") from None


def cli() -> int:
    return run(sys.argv[1:], os.environ)
