"""Jira Software Cloud, through Atlassian's API: an entry's OAuth token (client credentials), its site's cloud id, and
the builds and deployments bulk endpoints — their paths, bodies and answers."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay.credentials import CLOUD_ID_RE
from relay.errors import JiraRefused, TransientError
from relay.lru import Lru
from relay.masking import UNMISTAKABLE_MIN, known_secrets, scrubbed
from relay.text import as_mapping, as_text, clip
from relay.transport import json_body, send, token_lifetime

if TYPE_CHECKING:
    import requests

    from relay.credentials import JiraEntry, Keyring
    from relay.tracked import TrackedBuild

AUDIENCE = "api.atlassian.com"
SITES = 256  # sites whose cloud id is remembered
# What a refusal means, and what to do: by the call ("a token", "builds", "deployments", "its site's cloud id") and
# the answer, else by the answer alone.
SITE_CALL = "its site's cloud id"
# fmt: off
REFUSALS = {
    ("a token", 401): "Atlassian refuses its client id and secret: create new OAuth credentials in Jira settings → "
                      "Apps and put them in the entry",
    ("a token", 403): "Atlassian refuses the credentials for this API: check they are OAuth credentials of Jira "
                      "settings → Apps",
    (SITE_CALL, 404): 'no Jira site answers at its "jira" URL: correct it, or set "cloud_id"',
    ("", 400): "Jira refused the body it was sent (a value of the build's it does not take)",
    ("", 401): "Jira refused a token Atlassian had just given: check the site's OAuth credentials in Jira settings → "
               "Apps",
    ("", 403): "its OAuth credentials may not send this to the site: give them the Builds and Deployments "
               'permissions in Jira settings → Apps → OAuth credentials, and check its "cloud_id"',
}
# fmt: on


@dataclass(frozen=True)
class JiraAnswer:
    """What Jira said of what it was sent (202): whether it took it, why not, which issue keys it does not know."""

    accepted: bool
    rejected: tuple[str, ...] = ()  # Jira's own words
    unknown_keys: tuple[str, ...] = ()


@dataclass
class Jira:
    """Builds and deployments sent to the Jira sites of the credentials' Jira entries. One token per entry serves every
    event until it nearly expires, and is fetched again once on a 401; one cloud id per site per instance. A 429, a
    5xx and a failure to reach Atlassian are transient; a refused credential or body is JiraRefused."""

    api_url: str
    session: requests.Session
    timeout: Any
    keyring: Keyring | None = None  # whose credentials no body may carry
    _tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict, init=False, repr=False)
    _fetching: dict[tuple[str, str], threading.Lock] = field(default_factory=dict, init=False, repr=False)
    _cloud_ids: Lru = field(default_factory=lambda: Lru(SITES), init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def post_build(self, entry: JiraEntry, build: TrackedBuild) -> JiraAnswer:
        return self._post(entry, "builds", {"builds": [self.build_body(build)]})

    def post_deployment(self, entry: JiraEntry, build: TrackedBuild) -> JiraAnswer:
        return self._post(entry, "deployments", {"deployments": [self.deployment_body(build)]})

    def build_body(self, build: TrackedBuild) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemaVersion": "1.0",
            "pipelineId": build.pipeline_id,
            "buildNumber": build.number,
            "updateSequenceNumber": build.sequence,
            "displayName": build.name,
            "url": build.url,
            "state": build.state,
            "lastUpdated": build.updated,
            "description": build.description,
            "label": build.label,
            "issueKeys": list(build.keys),
            "references": [self._reference(build)],
        }
        if build.tests is not None:
            passed, failed, skipped = build.tests
            body["testInfo"] = {"totalNumber": passed + failed + skipped, "numberPassed": passed,
                                "numberFailed": failed, "numberSkipped": skipped}  # fmt: skip
        return body

    def deployment_body(self, build: TrackedBuild) -> dict[str, Any]:
        assert build.environment is not None
        environment = build.environment
        return {
            "schemaVersion": "1.0",
            "deploymentSequenceNumber": build.number,
            "updateSequenceNumber": build.sequence,
            "displayName": build.name,
            "url": build.url,
            "description": build.description,
            "lastUpdated": build.updated,
            "label": build.label,
            "state": build.state,
            "pipeline": {"id": build.pipeline_id, "displayName": build.pipeline_name, "url": build.url},
            "environment": {"id": environment.name, "displayName": environment.name, "type": environment.type},
            "associations": [{"associationType": "issueKeys", "values": list(build.keys)}],
        }

    def _reference(self, build: TrackedBuild) -> dict[str, Any]:
        reference: dict[str, Any] = {"commit": {"id": build.commit, "repositoryUri": build.repository_url}}
        if build.branch and build.branch_url:
            reference["ref"] = {"name": build.branch, "uri": build.branch_url}
        return reference

    def _post(self, entry: JiraEntry, kind: str, body: dict[str, Any]) -> JiraAnswer:
        url = f"{self.api_url}/jira/{kind}/0.1/cloud/{self.cloud_id(entry)}/bulk"
        own = known_secrets([*(self.keyring.secret_values() if self.keyring else ()), *self.secret_values()])
        body = scrubbed(body, [s for s in own if len(s) >= UNMISTAKABLE_MIN])  # whatever field a credential reached
        token = self.token(entry)
        response = self.send("POST", url, json=body, headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 401:  # the token may have been revoked before it expired: one fresh token
            token = self.token(entry, refused=token)
            response = self.send("POST", url, json=body, headers={"Authorization": f"Bearer {token}"})
        self._said(entry, response, kind)
        answer = json_body(response)
        rejected = [as_mapping(r) for r in _listed(answer.get(f"rejected{kind.capitalize()}"))]
        errors = [as_text(as_mapping(e).get("message")) for r in rejected for e in _listed(r.get("errors"))]
        unknown = [clip(k, 40) for k in _listed(answer.get("unknownIssueKeys")) if isinstance(k, str)]
        return JiraAnswer(not rejected, tuple(clip(e) for e in errors if e)[:5], tuple(unknown)[:10])

    def token(self, entry: JiraEntry, refused: str | None = None) -> str:
        """The entry's access token: fetched once, kept until shortly before it expires (or Jira refuses it); events
        that need it at once wait for the one request."""
        key = (entry.client_id, entry.secret)
        with self._once(key):
            with self._lock:
                known = self._tokens.get(key)
                if known is not None and known[0] != refused and time.monotonic() < known[1]:
                    return known[0]
            body = {"audience": AUDIENCE, "grant_type": "client_credentials", "client_id": entry.client_id,
                    "client_secret": entry.secret}  # fmt: skip
            response = self.send("POST", f"{self.api_url}/oauth/token", json=body)
            self._said(entry, response, "a token")
            answer = json_body(response)
            token, seconds = as_text(answer.get("access_token")), token_lifetime(answer.get("expires_in"))
            if not token or not token.isascii() or not token.isprintable():
                raise TransientError(f"Atlassian's token endpoint gave Jira entry {entry.position} no token")
            with self._lock:
                self._tokens[key] = (token, time.monotonic() + seconds - min(60.0, seconds / 2))
            return token

    def cloud_id(self, entry: JiraEntry) -> str:
        """The entry's site's cloud id: the entry's own, else its site's tenant_info, asked once per instance."""
        if entry.cloud_id:
            return entry.cloud_id
        with self._once(("site", entry.site)):
            known: str | None = self._cloud_ids.get(entry.site)
            if known is not None:
                return known
            response = self.send("GET", f"{entry.site}/_edge/tenant_info")
            self._said(entry, response, SITE_CALL)
            found = as_text(json_body(response).get("cloudId"))
            if not re.fullmatch(CLOUD_ID_RE, found):  # it goes into the path of every call
                raise JiraRefused(f'Jira entry {entry.position}\'s site answered no cloud id: set "cloud_id" in it')
            self._cloud_ids.put(entry.site, found)
            return found

    def _once(self, what: tuple[str, str]) -> threading.Lock:
        """What concurrent events ask for at once (a token, a cloud id) is asked once: the others wait for it."""
        with self._lock:
            return self._fetching.setdefault(what, threading.Lock())

    def secret_values(self) -> list[str]:
        """The tokens this instance holds (masked like every credential)."""
        with self._lock:
            return [token for token, _ in self._tokens.values()]

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Every request to Atlassian: the session's retries and the event's deadline (a resync counts them here). A
        redirect is not followed: a token request's body (the client secret) would go wherever it points."""
        return send(self.session, method, url, self.timeout, allow_redirects=False, **kwargs)

    def _said(self, entry: JiraEntry, response: requests.Response, what: str) -> None:
        """Raise what a refusal means: transient (429, 5xx) or the entry's to mend (anything else but 2xx), in words
        that say which call of which entry, and what to do."""
        code = response.status_code
        if 200 <= code < 300:
            return
        where = f"Jira entry {entry.position} ({entry.site})"
        if code == 429 or code >= 500:
            raise TransientError(f"Jira answered {code} to {what} of {where}")
        fix = REFUSALS.get((what, code)) or REFUSALS.get(("", code)) or "Jira refused what it was sent"
        if 300 <= code < 400:
            fix = "a redirect, not followed: check " + ('its "jira" URL' if what == SITE_CALL else "JIRA_API_URL")
        raise JiraRefused(f"Jira answered {code} to {what} of {where}: {fix}", code, token=what == "a token")


def _listed(value: Any) -> list[Any]:
    """A list an answer holds (of at most 100 items), or none: whatever else Jira's answer says is not read."""
    return value[:100] if isinstance(value, list) else []
