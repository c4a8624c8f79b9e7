"""A Jira Software Cloud stand-in: Atlassian's token endpoint, a site's tenant_info, and the builds and deployments
bulk APIs that a self-hosted tool calls with OAuth credentials, on loopback.

One server plays api.atlassian.com and the Jira sites (`add_site("acme")` serves http://127.0.0.1:PORT/acme). It
behaves as Jira does, not as the function would like:
- `POST /oauth/token` (client credentials, JSON or a form, audience api.atlassian.com) issues a Bearer token, good
  for `token_lifetime` seconds, to a client `accept_client` configured; another client gets 401 access_denied.
- `GET /{site}/_edge/tenant_info` answers the site's cloud id, without authentication.
- `POST /jira/builds/0.1/cloud/{cloudId}/bulk` and `/jira/deployments/0.1/cloud/{cloudId}/bulk`: an unknown or
  expired token gets 401; a client without that permission, or for another site, 403. Every body is validated
  against Atlassian's OpenAPI description of the same operations (`/rest/builds/0.1/bulk`,
  `/rest/deployments/0.1/bulk`): a request it refuses as a whole gets 400 with the reasons, and a build or
  deployment it refuses is rejected in the 202's answer ("in the case of an individual build having an invalid
  format (rather than the request as a whole) the response for the request will be a 202", the description says);
  both are recorded in `invalid`.
- `GET …/builds/0.1/cloud/{cloudId}/pipelines/{pipelineId}/builds/{buildNumber}` and `GET …/deployments/0.1/cloud/
  {cloudId}/pipelines/{pipelineId}/environments/{environmentId}/deployments/{deploymentSequenceNumber}` (the
  description's getBuildByKey and getDeploymentByKey, which "on-premise integrations can access"): the same 401 and
  403, then the stored data (200) or 404 ("No build data found for the given key"). A read that writes nothing.
- Jira's rules, from the same description: a build is (cloud id, pipelineId, buildNumber), a deployment (cloud id,
  pipeline id, environment id, deploymentSequenceNumber); stored data is replaced only by a greater
  updateSequenceNumber (an equal or lower one is accepted and ignored); issue keys the site does not know are listed
  in unknownIssueKeys, an entity is stored against its known keys only, and one associated with no known key is
  rejected.
- `answer_next(503, ...)` scripts the next answers (401, 403, 429 with Retry-After, 5xx, "timeout", "drop").
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import re
import secrets
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
from werkzeug.wrappers import Request, Response

from standins import LOGS, new_secret, remember_secret
from standins.bitbucket import Call, Server

SPEC = Path(__file__).resolve().parent / "data" / "specs" / "jira-software-cloud-builds-deployments.openapi.json.gz"
TOKEN_PATH = "/oauth/token"
AUDIENCE = "api.atlassian.com"
BULK = re.compile(r"/jira/(?P<kind>builds|deployments)/0\.1/cloud/(?P<cloud_id>[^/]+)/bulk")
TENANT_INFO = re.compile(r"/(?P<site>[^/]+)/_edge/tenant_info")
KEY_PATHS = {  # getBuildByKey and getDeploymentByKey, under /jira/{kind}/0.1/cloud/{cloudId}/
    "builds": "pipelines/{pipelineId}/builds/{buildNumber}",
    "deployments": "pipelines/{pipelineId}/environments/{environmentId}/deployments/{deploymentSequenceNumber}",
}
BY_KEY = {
    kind: re.compile(rf"/jira/{kind}/0\.1/cloud/(?P<cloudId>[^/]+)/" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path))
    for kind, path in KEY_PATHS.items()
}
KINDS = ("builds", "deployments")  # also the permissions a Jira admin gives OAuth credentials
TARGETS = ("api", "token", "bulk", *KINDS)  # where a scripted answer goes ("api": any path but tenant_info)
FAULTS = ("timeout", "drop")
ISSUE_ASSOCIATIONS = ("issueKeys", "issueIdOrKeys")
ISSUE_KEY = re.compile(r"\w{1,255}-\d{1,255}")  # the description's pattern of an issue key
ASSOCIATED_MAX = 500  # "The number of values counted across all associationTypes ... must not exceed a limit of 500"
SITE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
ANSWERS = {  # the names Jira's answers give each kind's lists
    "builds": ("acceptedBuilds", "rejectedBuilds"),
    "deployments": ("acceptedDeployments", "rejectedDeployments"),
}


@functools.cache
def openapi() -> OpenAPI:
    """Atlassian's description of the two operations, at the paths a self-hosted tool calls them (its own info says
    api.atlassian.com's /jira/{builds,deployments}/0.1/cloud/{cloudId}/... are "the same operations"). Relaxed in
    one respect: its Authorization parameter is a Connect app's `JWT …`; a self-hosted tool sends `Bearer <token>`,
    which the stand-in checks itself."""
    spec = json.loads(gzip.decompress(SPEC.read_bytes()))
    cloud_id = {"name": "cloudId", "in": "path", "required": True, "schema": {"type": "string"}}
    operations = {kind: spec["paths"][f"/rest/{kind}/0.1/bulk"] for kind in KINDS}
    reads = {kind: spec["paths"][f"/rest/{kind}/0.1/{KEY_PATHS[kind]}"]["get"] for kind in KINDS}
    spec["paths"] = {f"/jira/{kind}/0.1/cloud/{{cloudId}}/bulk": {**operations[kind], "parameters": [cloud_id]}
                     for kind in KINDS}  # fmt: skip
    spec["paths"].update({f"/jira/{kind}/0.1/cloud/{{cloudId}}/{KEY_PATHS[kind]}": {"get": reads[kind],
                          "parameters": [cloud_id]} for kind in KINDS})  # fmt: skip
    spec["servers"] = [{"url": "/"}]
    return OpenAPI.from_dict(spec)


def json_body(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")


def gateway(status: int, message: str | None = None) -> Response:
    """An answer of Atlassian's API gateway (401, 403, 404, 429, 5xx): `{"code": …, "message": …}`."""
    return json_body({"code": status, "message": message or HTTPStatus(status).phrase}, status)


def identity(kind: str, entity: Any) -> dict[str, Any] | None:
    """The fields that name an entity in Jira's answers (its key), or None when it lacks them."""
    if not isinstance(entity, dict):
        return None
    if kind == "builds":
        key = {"pipelineId": entity.get("pipelineId"), "buildNumber": entity.get("buildNumber")}
        named = isinstance(key["pipelineId"], str) and type(key["buildNumber"]) is int
        return key if named else None
    pipeline, environment = entity.get("pipeline"), entity.get("environment")
    key = {
        "pipelineId": pipeline.get("id") if isinstance(pipeline, dict) else None,
        "environmentId": environment.get("id") if isinstance(environment, dict) else None,
        "deploymentSequenceNumber": entity.get("deploymentSequenceNumber"),
    }
    named = isinstance(key["pipelineId"], str) and isinstance(key["environmentId"], str)
    return key if named and type(key["deploymentSequenceNumber"]) is int else None


def associations(kind: str, entity: dict[str, Any]) -> list[tuple[str, Any]]:
    """(association type, value) of every issue, service or commit an entity names, in order. A deployment's
    top-level issueKeys is deprecated, and still read."""
    named: list[tuple[str, Any]] = [("issueKeys", key) for key in entity.get("issueKeys") or []]
    if kind == "deployments":
        for association in entity.get("associations") or []:
            if isinstance(association, dict):
                named += [(str(association.get("associationType")), v) for v in association.get("values") or []]
    return named


def unchecked(kind: str, entity: dict[str, Any]) -> list[str]:
    """What the description asks of an entity that its validator cannot check: its URLs' format (`URL`, `uri`:
    not checked without an extra package) and a deployment's 500 associated values in all."""
    problems = []
    urls = [("url", entity.get("url"))]
    if kind == "deployments":
        pipeline = entity.get("pipeline")
        urls.append(("pipeline.url", pipeline.get("url") if isinstance(pipeline, dict) else None))
        given = entity.get("associations") or []
        values = sum(len(a.get("values") or []) for a in given if isinstance(a, dict))
        if values > ASSOCIATED_MAX:
            problems.append(f"associations: {values} values in all, more than {ASSOCIATED_MAX}")
    for name, url in urls:
        if isinstance(url, str):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                problems.append(f"{name}: {url[:100]!r} is not an absolute URL")
    return problems


@dataclass(frozen=True)
class Raw:
    """A scripted answer sent as is: what no Jira should answer (a malformed body), for the client's sake."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Client:
    """OAuth credentials a Jira admin created: their secret, their permissions, the sites (cloud ids) they serve."""

    secret: str
    permissions: frozenset[str]
    sites: frozenset[str] | None  # None: every site of the stand-in


@dataclass
class Stored:
    """An entity as Jira keeps it: the latest data accepted for its identity, and the known issues it shows on."""

    data: dict[str, Any]
    issues: tuple[str, ...]


@dataclass
class Jira:
    """State and behaviour; `serve()` puts it on a loopback port, and sites are added after."""

    token_lifetime: int = 3600  # seconds an access token is good for (Atlassian's: about an hour)
    expires_in: Any = None  # what a token's answer says of its lifetime, as is (None: token_lifetime)
    retry_after: int = 1  # seconds a 429 asks the client to wait
    fault_delay: float = 2.0  # how long a "timeout" answer keeps the client waiting
    validate: bool = True  # against the OpenAPI description; the benchmark turns it off to measure the function
    root: str = ""  # http://127.0.0.1:PORT, once served
    sites: dict[str, str] = field(default_factory=dict)  # site name → cloud id
    issues: dict[str, set[str]] = field(default_factory=dict)  # cloud id → the issue keys its Jira knows
    clients: dict[str, Client] = field(default_factory=dict)  # client id → its credentials
    builds: dict[tuple[Any, ...], Stored] = field(default_factory=dict)  # (cloud id, pipelineId, buildNumber)
    # (cloud id, pipeline id, environment id, deploymentSequenceNumber)
    deployments: dict[tuple[Any, ...], Stored] = field(default_factory=dict)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of each body the description refuses
    calls: list[Call] = field(default_factory=list)  # a token request's client_secret is not kept
    authorizations: list[str] = field(default_factory=list)  # every Authorization header received
    scripted: deque[tuple[str, int | str | Raw]] = field(default_factory=deque)  # (target, answer) for the next calls
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # access token → (client id, expiry)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- what tests configure -------------------------------------------------

    def add_site(self, name: str, cloud_id: str | None = None) -> tuple[str, str]:
        """A Jira site at http://127.0.0.1:PORT/{name}: its URL and its cloud id (a random UUID unless given)."""
        if not SITE_NAME.fullmatch(name) or name in ("jira", "oauth"):
            raise ValueError(f"Not a site name this stand-in can serve: {name!r}")
        if not self.root:
            raise RuntimeError("serve() first: a site's URL is on the stand-in's port")
        with self._lock:
            self.sites[name] = cloud_id = cloud_id or str(uuid.uuid4())
            self.issues.setdefault(cloud_id, set())
        return f"{self.root}/{name}", cloud_id

    def add_issues(self, cloud_id: str, *keys: str) -> None:
        """Issues that exist in the site's Jira: builds and deployments show on these keys only."""
        if cloud_id not in self.issues:
            raise ValueError(f"No site has the cloud id {cloud_id!r}: add_site() first")
        with self._lock:
            self.issues[cloud_id].update(keys)

    def accept_client(
        self,
        client_id: str,
        client_secret: str,
        permissions: tuple[str, ...] = KINDS,
        sites: tuple[str, ...] | None = None,
    ) -> None:
        """OAuth credentials a Jira admin created (Jira settings → Apps → OAuth credentials): the permissions given
        (builds, deployments) and the cloud ids of the sites they serve (None: every site). Accepting a client
        again replaces its permissions, for tokens already issued too."""
        remember_secret(client_secret)
        if unknown := set(permissions) - set(KINDS):
            raise ValueError(f"Jira's OAuth credentials have no permission {sorted(unknown)}")
        with self._lock:
            self.clients[client_id] = Client(
                client_secret, frozenset(permissions), None if sites is None else frozenset(sites)
            )

    def expire_tokens(self) -> None:
        """Every access token issued so far expires now (the next call with one gets 401)."""
        with self._lock:
            self._tokens = {token: (client, 0.0) for token, (client, _) in self._tokens.items()}

    def answer_next(self, *answers: int | str | Raw, to: str = "api") -> None:
        """The next calls to `to` are answered these, in order, instead of being served: a status (401, 403, 429
        with Retry-After, 5xx), "timeout" (served, answered after fault_delay), "drop" (the connection closed) or
        a Raw answer (its status and body, as is).
        `to`: "api" (any path but tenant_info), "token", "bulk" (either bulk path), "builds" or "deployments" (that
        API's bulk path and its reads by key)."""
        if to not in TARGETS:
            raise ValueError(f"answer_next(to=...) takes one of {TARGETS}")
        for answer in answers:
            scriptable = (
                isinstance(answer, Raw) or answer in FAULTS or (isinstance(answer, int) and 400 <= answer <= 599)
            )
            if not scriptable:
                raise ValueError(f"Not an answer the stand-in can script: {answer!r}")
        with self._lock:
            self.scripted.extend((to, answer) for answer in answers)

    # --- what tests read ------------------------------------------------------

    def builds_for(self, cloud_id: str, issue_key: str) -> list[dict[str, Any]]:
        """What Jira shows on the issue: each build stored against it, as its latest accepted data."""
        return self._shown(self.builds, cloud_id, issue_key)

    def deployments_for(self, cloud_id: str, issue_key: str) -> list[dict[str, Any]]:
        return self._shown(self.deployments, cloud_id, issue_key)

    def _shown(self, store: dict[tuple[Any, ...], Stored], cloud_id: str, issue_key: str) -> list[dict[str, Any]]:
        with self._lock:
            found = [(key, s.data) for key, s in store.items() if key[0] == cloud_id and issue_key in s.issues]
        return [copy.deepcopy(data) for _, data in sorted(found, key=lambda item: item[0])]

    @property
    def token_requests(self) -> int:
        return sum(1 for call in self.calls if call.path == TOKEN_PATH)

    @property
    def tenant_info_requests(self) -> int:
        return sum(1 for call in self.calls if TENANT_INFO.fullmatch(call.path))

    def build_calls(self) -> list[Call]:
        """The calls to the builds bulk path that were served (not answered by a scripted fault)."""
        return self._served("builds")

    def deployment_calls(self) -> list[Call]:
        return self._served("deployments")

    def _served(self, kind: str) -> list[Call]:
        with self._lock:
            calls = list(self.calls)
        return [c for c in calls if (found := BULK.fullmatch(c.path)) and found["kind"] == kind
                and c.fault in (None, "timeout")]  # fmt: skip

    # --- the WSGI application ---------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.authorizations.append(request.headers.get("Authorization", ""))
        target = _target(request.path)
        answer = self._scripted(target)
        if answer == "drop":
            self._record(request, 0, answer)
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            return Response("", 500)(environ, start_response)
        if isinstance(answer, Raw):
            response = Response(
                answer.body, answer.status, headers=list(answer.headers), content_type="application/json"
            )
        elif isinstance(answer, int):
            response = self._fault(answer, target)
        else:
            response = self._handle(request)
        self._record(request, response.status_code, answer)
        if answer == "timeout":  # served, and its answer comes too late for the client
            time.sleep(self.fault_delay)
        return response(environ, start_response)

    def _scripted(self, target: str | None) -> int | str | Raw | None:
        with self._lock:
            for at, (to, answer) in enumerate(self.scripted):
                api = target.partition(":")[0] if target else None  # "builds:read" is the builds API's too
                if target is not None and (to in ("api", target, api) or (to == "bulk" and target in KINDS)):
                    del self.scripted[at]
                    return answer
        return None

    def _fault(self, status: int, target: str | None) -> Response:
        if target == "token" and status in (401, 403):
            return json_body({"error": "access_denied", "error_description": "Unauthorized"}, status)
        response = gateway(status)
        if status == 429:
            response.headers["Retry-After"] = str(self.retry_after)
        return response

    def _record(self, request: Request, status: int, answer: int | str | Raw | None) -> None:
        body = request.get_json(silent=True) if request.is_json else request.form.to_dict() or None
        if request.path == TOKEN_PATH and isinstance(body, dict) and "client_secret" in body:
            body = {**body, "client_secret": "(not kept)"}
        raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI", "")
        fault = None if answer is None else "raw" if isinstance(answer, Raw) else str(answer)
        with self._lock:
            self.calls.append(Call(request.method, request.path, status, raw_uri, body, fault))

    def _handle(self, request: Request) -> Response:
        if request.path == TOKEN_PATH:
            return self._token(request) if request.method == "POST" else gateway(405)
        if found := TENANT_INFO.fullmatch(request.path):
            cloud_id = self.sites.get(found["site"])
            if request.method != "GET":
                return gateway(405)
            return json_body({"cloudId": cloud_id}) if cloud_id else gateway(404)
        if found := BULK.fullmatch(request.path):
            return self._bulk(request, found["kind"], found["cloud_id"]) if request.method == "POST" else gateway(405)
        for kind, pattern in BY_KEY.items():
            if found := pattern.fullmatch(request.path):
                return self._by_key(request, kind, found.groupdict()) if request.method == "GET" else gateway(405)
        return gateway(404)

    def _token(self, request: Request) -> Response:
        form = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        form = form if isinstance(form, dict) else {}
        if form.get("grant_type") != "client_credentials":
            return json_body({"error": "unsupported_grant_type", "error_description": "Grant type not supported"}, 400)
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        with self._lock:
            client = self.clients.get(client_id)
            if client is None or not secrets.compare_digest(client.secret.encode(), secret.encode()):
                return json_body({"error": "access_denied", "error_description": "Unauthorized"}, 401)
            if form.get("audience") != AUDIENCE:
                audience = str(form.get("audience", ""))[:100]
                return json_body({"error": "access_denied", "error_description": f"Service not found: {audience}"}, 403)
            token = new_secret()
            self._tokens[token] = (client_id, time.monotonic() + self.token_lifetime)
        said = self.token_lifetime if self.expires_in is None else self.expires_in
        return json_body({"access_token": token, "expires_in": said, "token_type": "Bearer"})

    def _client(self, request: Request) -> Client | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            client_id, expiry = self._tokens.get(token, ("", 0.0)) if scheme == "Bearer" else ("", 0.0)
            return self.clients.get(client_id) if expiry > time.monotonic() else None

    def _refused(self, request: Request, kind: str, cloud_id: str) -> Response | None:
        """401 for a token no client holds (or an expired one), 403 for a site or an API the client may not use."""
        client = self._client(request)
        if client is None:
            return gateway(401)
        if cloud_id not in self.issues or (client.sites is not None and cloud_id not in client.sites):
            return gateway(403, "The credentials do not grant access to this site")
        if kind not in client.permissions:
            return gateway(403, f"The credentials have no permission for {kind}")
        return None

    def _by_key(self, request: Request, kind: str, key: dict[str, str]) -> Response:
        """getBuildByKey, getDeploymentByKey: what is stored for the key (200), or 404. Nothing is written."""
        cloud_id, *names, number = key.values()  # the cloud id, the pipeline (and environment), the number
        if refused := self._refused(request, kind, cloud_id):
            return refused
        errors = openapi().unmarshal_request(WerkzeugOpenAPIRequest(request)).errors if self.validate else []
        if errors or not number.isdigit():
            reasons = [f"{type(error).__name__}: {error}" for error in errors] or [f"{number[:100]!r} is no number"]
            return json_body([{"message": reason} for reason in reasons], 400)
        store = self.builds if kind == "builds" else self.deployments
        with self._lock:
            stored = store.get((cloud_id, *names, int(number)))
            data = copy.deepcopy(stored.data) if stored else None
        return json_body(data) if data is not None else gateway(404, f"No {kind[:-1]} data found for the given key")

    def _bulk(self, request: Request, kind: str, cloud_id: str) -> Response:
        if refused := self._refused(request, kind, cloud_id):
            return refused
        body: Any = request.get_json(silent=True)
        LOGS.append(request.get_data(as_text=True))  # scanned for credentials, like the tests' output
        problems, whole = self._check(request, kind, body)
        if whole:
            with self._lock:
                self.invalid.append((request.path, "; ".join(whole)))
            return json_body([{"message": message} for message in whole], 400)
        accepted, rejected = ANSWERS[kind]
        answer: dict[str, list[Any]] = {accepted: [], rejected: [], "unknownIssueKeys": []}
        if kind == "deployments":
            answer["unknownAssociations"] = []
        with self._lock:
            for index, entity in enumerate(body[kind]):
                key = identity(kind, entity)
                if index in problems:
                    self.invalid.append((request.path, f"{kind}[{index}]: " + "; ".join(problems[index])))
                    answer[rejected].append({"key": key, "errors": [{"message": m} for m in problems[index]]})
                elif self._keep(kind, cloud_id, entity, answer):
                    answer[accepted].append(key)
                else:
                    message = f"None of the issue keys of this {kind[:-1]} exists in Jira"
                    answer[rejected].append({"key": key, "errors": [{"message": message}]})
        return json_body(answer, 202)

    def _check(self, request: Request, kind: str, body: Any) -> tuple[dict[int, list[str]], list[str]]:
        """What the description refuses in each entity (by its index), and in the request as a whole."""
        problems: dict[int, list[str]] = {}
        whole: list[str] = []
        if self.validate:
            for error in openapi().unmarshal_request(WerkzeugOpenAPIRequest(request)).errors:
                details = getattr(error.__cause__, "schema_errors", None) or []
                if not details:
                    whole.append(f"{type(error).__name__}: {error}")
                for detail in details:
                    path = list(detail.absolute_path)
                    if len(path) >= 2 and path[0] == kind and isinstance(path[1], int):
                        problems.setdefault(path[1], []).append(_at(path[2:]) + detail.message)
                    else:
                        whole.append(_at(path) + detail.message)
        entities = body.get(kind) if isinstance(body, dict) else None
        if not isinstance(entities, list) or not entities:
            return problems, whole or [f"{kind}: a list of at least one is required"]
        for index, entity in enumerate(entities):
            if identity(kind, entity) is None:
                whole.append(f"{kind}[{index}]: without its key it cannot be told apart")
                continue
            if self.validate:
                problems[index] = problems.get(index, []) + unchecked(kind, entity)
            if type(entity.get("updateSequenceNumber")) is not int and not problems.get(index):
                problems[index] = ["updateSequenceNumber: an integer is required"]
        return {index: found for index, found in problems.items() if found}, whole

    def _keep(self, kind: str, cloud_id: str, entity: dict[str, Any], answer: dict[str, list[Any]]) -> bool:
        """Jira's rules for one valid entity: its unknown keys listed, stored against its known ones when its
        updateSequenceNumber is greater than the stored one's. False: rejected, for naming no known issue."""
        named = associations(kind, entity)
        issues = self.issues[cloud_id]
        known = [v for t, v in named if t in ISSUE_ASSOCIATIONS and isinstance(v, str) and v in issues]
        unknown = [(t, v) for t, v in named if not (t in ISSUE_ASSOCIATIONS and v in known)]
        for association_type, value in unknown:
            is_key = association_type in ISSUE_ASSOCIATIONS and isinstance(value, str) and ISSUE_KEY.fullmatch(value)
            if is_key and value not in answer["unknownIssueKeys"]:
                answer["unknownIssueKeys"].append(value)
        if kind == "deployments":
            for association_type in dict.fromkeys(t for t, _ in unknown):
                values = [v for t, v in unknown if t == association_type]
                answer["unknownAssociations"].append({"associationType": association_type, "values": values})
        if named and not known:
            return False
        store = self.builds if kind == "builds" else self.deployments
        stored_key = (cloud_id, *(identity(kind, entity) or {}).values())
        stored = store.get(stored_key)
        if stored is None or entity["updateSequenceNumber"] > stored.data["updateSequenceNumber"]:
            store[stored_key] = Stored(copy.deepcopy(entity), tuple(dict.fromkeys(known)))
        return True

    # --- serving ----------------------------------------------------------------

    def spec(self) -> OpenAPI:
        return openapi()

    def serve(self, port: int = 0, ssl_context: Any = None) -> Server:
        server = Server(self, port, ssl_context)
        self.root = server.root
        return server


def _target(path: str) -> str | None:
    """Which scripted answers a call takes: None for tenant_info (never scripted)."""
    if path == TOKEN_PATH:
        return "token"
    if found := BULK.fullmatch(path):
        return found["kind"]
    if kind := next((kind for kind, pattern in BY_KEY.items() if pattern.fullmatch(path)), None):
        return f"{kind}:read"
    return None if TENANT_INFO.fullmatch(path) else "other"


def _at(path: list[Any]) -> str:
    return ".".join(str(part) for part in path) + ": " if path else ""
