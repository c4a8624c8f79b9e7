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
from relay.text import as_mapping, as_text, clip
from relay.transport import json_body, send

if TYPE_CHECKING:
    import requests

    from relay.credentials import JiraEntry
    from relay.tracked import TrackedBuild

AUDIENCE = "api.atlassian.com"
SITES = 256  # sites whose cloud id is remembered


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
    _tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict, init=False, repr=False)
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
        token = self.token(entry)
        response = self.send("POST", url, json=body, headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 401:  # the token may have been revoked before it expired: one fresh token
            token = self.token(entry, refused=token)
            response = self.send("POST", url, json=body, headers={"Authorization": f"Bearer {token}"})
        self._said(entry, response, f"{kind} of")
        answer = json_body(response)
        rejected = [as_mapping(r) for r in answer.get(f"rejected{kind.capitalize()}") or () if isinstance(r, dict)]
        errors = [as_text(as_mapping(e).get("message")) for r in rejected for e in r.get("errors") or ()]
        unknown = [as_text(k) for k in answer.get("unknownIssueKeys") or () if isinstance(k, str)]
        return JiraAnswer(not rejected, tuple(clip(e) for e in errors if e)[:5], tuple(unknown)[:100])

    def token(self, entry: JiraEntry, refused: str | None = None) -> str:
        """The entry's access token: fetched once, kept until shortly before it expires (or Jira refuses it)."""
        key = (entry.client_id, entry.secret)
        with self._lock:
            known = self._tokens.get(key)
            if known is not None and known[0] != refused and time.monotonic() < known[1]:
                return known[0]
        body = {"audience": AUDIENCE, "grant_type": "client_credentials", "client_id": entry.client_id,
                "client_secret": entry.secret}  # fmt: skip
        response = self.send("POST", f"{self.api_url}/oauth/token", json=body)
        self._said(entry, response, "a token for")
        answer = json_body(response)
        token, lifetime = as_text(answer.get("access_token")), answer.get("expires_in")
        if not token or not token.isascii() or not token.isprintable():
            raise TransientError(f"Atlassian's token endpoint gave Jira entry {entry.position} no token")
        lifetime = float(lifetime) if isinstance(lifetime, (int, float)) and lifetime > 0 else 3600.0
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + lifetime - min(60.0, lifetime / 2))
        return token

    def cloud_id(self, entry: JiraEntry) -> str:
        """The entry's site's cloud id: the entry's own, else its site's tenant_info, asked once per instance."""
        if entry.cloud_id:
            return entry.cloud_id
        known: str | None = self._cloud_ids.get(entry.site)
        if known is not None:
            return known
        response = self.send("GET", f"{entry.site}/_edge/tenant_info")
        self._said(entry, response, "the cloud id of")
        found = as_text(json_body(response).get("cloudId"))
        if not re.fullmatch(CLOUD_ID_RE, found):  # it goes into the path of every call
            raise JiraRefused(f'Jira entry {entry.position}\'s site answered no cloud id: set "cloud_id" in the entry')
        self._cloud_ids.put(entry.site, found)
        return found

    def secret_values(self) -> list[str]:
        """The tokens this instance holds (masked like every credential)."""
        with self._lock:
            return [token for token, _ in self._tokens.values()]

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Every request to Atlassian: the session's retries and the event's deadline (a resync counts them here)."""
        return send(self.session, method, url, self.timeout, **kwargs)

    def _said(self, entry: JiraEntry, response: requests.Response, what: str) -> None:
        """Raise what a refusal means: transient (429, 5xx) or the entry's to mend (anything else but 2xx)."""
        code = response.status_code
        if 200 <= code < 300:
            return
        where = f"Jira entry {entry.position} ({entry.site})"
        if code == 429 or code >= 500:
            raise TransientError(f"Jira answered {code} to {what} {where}")
        fix = {401: "its client id and secret are refused: create new OAuth credentials in Jira settings → Apps",
               403: "its OAuth credentials lack the builds or deployments permission: give them in Jira settings → "
                    "Apps → OAuth credentials"}.get(code, "Jira refused what it was sent")  # fmt: skip
        raise JiraRefused(f"Jira answered {code} to {what} {where}: {fix}")
