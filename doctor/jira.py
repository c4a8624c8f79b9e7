"""Doctor's checks of each Jira entry of the credentials, each with its one fix: a token (Atlassian's token endpoint
takes the entry's client id and secret), the site (its cloud id: the entry's own, which the site must confirm, or the
site's tenant_info), and the permission to send builds (and deployments, where a build of the period deploys).

Atlassian's API offers OAuth credentials no call that says what they may do. The harmless probe is a read of a build
(getBuildByKey) and of a deployment (getDeploymentByKey) that no one sent, which "on-premise integrations can access"
(Atlassian's description): Jira answers 404 to credentials that may use that API, and 403 to others. It writes
nothing a user would see; nothing is written to Jira at all (the token request creates nothing either).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import relay.config
import relay.errors
import relay.jira
import relay.tracked
import relay.translate
import relay.transport
from relay.credentials import Credential, JiraEntry

if TYPE_CHECKING:
    from doctor import Findings

PROBE = "make-doctor-probe"  # the pipeline (and environment) of the build and deployment read: none the function sends
PATHS = {  # under {JIRA_API_URL}/jira/{kind}/0.1/cloud/{cloudId}/: what Atlassian's description calls them by key
    "builds": f"pipelines/{PROBE}/builds/0",
    "deployments": f"pipelines/{PROBE}/environments/{PROBE}/deployments/0",
}
APPS = "Jira settings \u2192 Apps \u2192 OAuth credentials"
AGAIN = "run make doctor again; if it stays, see Atlassian's status (https://status.atlassian.com)"
MAY = (200, 404)  # a read of a key: stored, or not; either way the credentials may use the API


def check_jira(
    found: Findings, config: relay.config.Config, entries: Iterable[Credential | JiraEntry],
    builds: Iterable[Mapping[str, Any]], project: str, function_project: str, since: str,
) -> None:  # fmt: skip
    """Each Jira entry: its token, its site, its permissions (builds always; deployments where the period's builds
    that the entry is told of deploy)."""
    sites = [entry for entry in entries if isinstance(entry, JiraEntry)]
    if not sites:
        return
    print(f"\nJira: {len(sites)} entr{'y' if len(sites) == 1 else 'ies'} of the credentials", file=found.out)
    session = relay.transport.http_session(config.retry_backoff_seconds, sum(config.timeout), config.connections)
    jira = relay.jira.Jira(config.jira_api_url, session, config.timeout)
    deploying = [b for b in builds if relay.tracked.environment_of(b) is not None]
    for entry in sites:
        told = sum(1 for build in deploying if _serves(entry, build, config, project))
        check_entry(found, jira, entry, told, function_project, since)


def _serves(entry: JiraEntry, build: Mapping[str, Any], config: relay.config.Config, project: str) -> bool:
    """Whether the entry may be told of the build: its repository (any, for a connected one not looked up) and
    project are the entry's."""
    update = relay.translate.translate(build, config)
    if not isinstance(update, relay.translate.Update):
        return False
    candidates = update.target.candidates
    return not candidates or any(entry.serves(repository, project) for repository in candidates)


def check_entry(found: Findings, jira: relay.jira.Jira, entry: JiraEntry, deploying: int, project: str,
                since: str) -> None:  # fmt: skip
    name = f"Jira entry {entry.position} ({entry.site})"
    token = _token(found, jira, entry, name, project)
    cloud_id = _site(found, jira, entry, name, project)
    if token and cloud_id:
        _permissions(found, jira, entry, name, cloud_id, deploying, since, project)


def _token(found: Findings, jira: relay.jira.Jira, entry: JiraEntry, name: str, project: str) -> str | None:
    try:
        token = jira.token(entry)
    except relay.errors.JiraRefused:
        found.bad(f"{name}: Atlassian refuses its client id and secret",
                  f"create new OAuth credentials in {APPS}, put their client id and secret in the entry, then make "
                  f"credentials PROJECT={project} < credentials.json")  # fmt: skip
        return None
    except relay.errors.TransientError as error:
        found.bad(f"{name}: Atlassian gave no token ({error})", AGAIN)
        return None
    found.good(f"{name}: Atlassian gives its OAuth credentials a token")
    return token


def _site(found: Findings, jira: relay.jira.Jira, entry: JiraEntry, name: str, project: str) -> str | None:
    """The site's cloud id: the entry's own, unless the site says another; else the site's tenant_info."""
    fix = (f'check the site\'s URL in "jira" (https://<your-site>.atlassian.net), or set "cloud_id" in the entry; '
           f"then make credentials PROJECT={project} < credentials.json")  # fmt: skip
    try:
        said = jira.cloud_id(dataclasses.replace(entry, cloud_id=None))
    except (relay.errors.JiraRefused, relay.errors.TransientError) as error:
        if entry.cloud_id:  # the function does not ask the site: the permissions' check tries the entry's own
            found.good(f"{name}: its site's cloud id is the entry's \"cloud_id\" {entry.cloud_id}")
            return entry.cloud_id
        reason = "the site gives no cloud id" if isinstance(error, relay.errors.JiraRefused) else str(error)
        found.bad(f"{name}: the site's cloud id cannot be found ({reason})", fix)
        return None
    if entry.cloud_id and entry.cloud_id != said:
        found.bad(f'{name}: its "cloud_id" {entry.cloud_id} is not its site\'s ({said}, the site says)',
                  f'set "cloud_id" to {said}, or remove it; then make credentials PROJECT={project} < '
                  "credentials.json")  # fmt: skip
        return None
    found.good(f"{name}: its site's cloud id is {said}")
    return said


def _permissions(found: Findings, jira: relay.jira.Jira, entry: JiraEntry, name: str, cloud_id: str,
                 deploying: int, since: str, project: str) -> None:  # fmt: skip
    """A read of a build, and of a deployment, that do not exist: 404 (or 200) where the credentials may use that
    API, 403 where they may not."""

    def grant(permission: str) -> str:
        return f"give them the permission {permission} in {APPS}"

    answered = {}
    for kind in PATHS:
        try:
            answered[kind] = _read(jira, entry, cloud_id, kind)
        except (relay.errors.TransientError, relay.errors.JiraRefused) as error:  # the token fetched again, refused
            found.bad(f"{name}: Jira could not be asked whether it takes {kind} ({error})", AGAIN)
            return
        if answered[kind] == 401:
            found.bad(f"{name}: Jira refuses the token Atlassian gave its OAuth credentials",
                      f"create new OAuth credentials in {APPS}, put them in the entry, then make credentials "
                      f"PROJECT={project} < credentials.json")  # fmt: skip
            return
        if answered[kind] not in (*MAY, 403):
            found.bad(f"{name}: Jira answered {answered[kind]} to reading a {kind[:-1]}", AGAIN)
            return
    if answered["builds"] == 403:
        found.bad(f"{name}: its OAuth credentials may not send builds (Jira answered 403)",
                  grant("Builds") + ", on this site: OAuth credentials serve the site they were made on")  # fmt: skip
    elif answered["deployments"] in MAY:
        found.good(f"{name}: Jira takes builds and deployments from its OAuth credentials")
    elif deploying:
        plural = "s it is told of deploy" if deploying > 1 else " it is told of deploys"
        found.bad(f"{name}: its OAuth credentials may send builds, not deployments, and {deploying} build{plural} "
                  f"since {since}", grant("Deployments"))  # fmt: skip
    else:
        found.good(f"{name}: Jira takes builds from its OAuth credentials (not deployments, which no build it is "
                   f"told of since {since} makes)")  # fmt: skip


def _read(jira: relay.jira.Jira, entry: JiraEntry, cloud_id: str, kind: str) -> int:
    """Jira's answer to a read of the probe's build or deployment, with the entry's token (a fresh one once, on a
    401, as the function does)."""
    url = f"{jira.api_url}/jira/{kind}/0.1/cloud/{cloud_id}/{PATHS[kind]}"

    def read(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        return relay.transport.send(jira.session, "GET", url, jira.timeout, headers=headers).status_code

    token = jira.token(entry)
    code = read(token)
    return read(jira.token(entry, refused=token)) if code == 401 else code
