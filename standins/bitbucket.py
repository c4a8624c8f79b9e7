"""A Bitbucket Cloud stand-in: the commit-status endpoints, on loopback.

It behaves as Bitbucket does, not as the function would like: each request is
validated against Atlassian's OpenAPI description, credentials are checked,
keys over 40 characters get Bitbucket's 400, only a status's creator may
overwrite it, and a status is identified by repository, commit and key: a POST
with the same key overwrites it, refname included ("If the specified key already
exists, the existing status object will be overwritten", Atlassian's
description of the POST; its PUT may change refname). A
repository access token reaches only its repositories (403 elsewhere: an
assumption, Atlassian does not document the answer); each credential has a
budget of calls per window, answered with 429 beyond it, and access tokens get
the X-RateLimit-* headers. It can inject 5xx answers, timeouts and dropped
connections. A commit's GET answers the message set in `commit_messages` (404 for
a commit not set there).

Run it alone with `python -m standins.bitbucket --port 8929`.
"""

from __future__ import annotations

import argparse
import base64
import functools
import gzip
import hashlib
import json
import logging
import os
import random
import re
import secrets
import socket
import ssl
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from standins import LOGS, new_secret, remember_basic, remember_secret, shut_down

SPEC = Path(__file__).resolve().parent / "data" / "specs" / "bitbucket-cloud-2.0.openapi.json.gz"
STATUSES = re.compile(
    r"/2\.0/repositories/(?P<workspace>[^/]+)/(?P<slug>[^/]+)/commit/(?P<commit>[^/]+)/statuses"
    r"(?:/build(?:/(?P<key>[^/]+))?)?"
)
REPORTS = re.compile(
    r"/2\.0/repositories/(?P<workspace>[^/]+)/(?P<slug>[^/]+)/commit/(?P<commit>[^/]+)/reports/(?P<report>[^/]+)"
    r"(?P<annotations>/annotations)?"
)
REPOSITORY = re.compile(r"/2\.0/repositories/(?P<workspace>[^/]+)/(?P<slug>[^/]+)")
COMMIT = re.compile(r"/2\.0/repositories/(?P<workspace>[^/]+)/(?P<slug>[^/]+)/commit/(?P<commit>[^/]+)")
SUMMARY_MAX = 450  # an annotation's summary: "summary: Ensure this value has at most 450 characters" (reviewdog #1285)
REPORT_DATA_MAX = 10  # "An array of data fields to display information on the report. Maximum 10."
TOKEN_PATH = "/site/oauth2/access_token"
STATS_PATH = "/_standin/stats"  # the stand-in's own counters, for the benchmark
FAULTS = ("500", "502", "503", "429", "timeout", "drop")


# openapi-core warns about the spec's api_key scheme on every request; it is not one we check.
warnings.filterwarnings("ignore", "Unsupported scheme type")


@functools.cache
def openapi() -> OpenAPI:
    """Atlassian's spec, relaxing only the `type` every schema inherits."""
    spec = json.loads(gzip.decompress(SPEC.read_bytes()))
    del spec["components"]["schemas"]["object"]["required"]
    # A data field's value is typed "object", yet the same description documents numbers, strings and booleans
    # for it (DURATION in milliseconds, TEXT, BOOLEAN): the value's type is left to the field's `type`.
    del spec["components"]["schemas"]["report_data"]["properties"]["value"]["type"]
    spec["servers"] = [{"url": "/2.0"}]
    return OpenAPI.from_dict(spec)


def error(status: int, message: str, fields: dict[str, list[str]] | None = None) -> Response:
    body: dict[str, Any] = {"type": "error", "error": {"message": message}}
    if fields:
        body["error"]["fields"] = fields
    return Response(json.dumps(body), status, content_type="application/json")


@dataclass
class Call:
    method: str
    path: str
    status: int
    raw_uri: str = ""
    body: dict[str, Any] | None = None
    fault: str | None = None


@dataclass
class Bitbucket:
    """State and behaviour; `serve()` puts it on a loopback port."""

    repositories: set[str] = field(default_factory=set)  # "workspace/slug"; empty = any
    basic: dict[str, str] = field(default_factory=dict)  # username → password
    tokens: set[str] = field(default_factory=set)
    consumers: dict[str, str] = field(default_factory=dict)  # client_id → secret
    token_lifetime: int = 7200
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULTS
    fault_delay: float = 2.0  # how long a "timeout" fault keeps the client waiting
    budget: int | None = None  # calls each credential may make per budget_window seconds, then 429
    budget_window: float = 3600.0
    near_limit_share: float = 0.8  # X-RateLimit-NearLimit turns true once this share of the budget is used
    retry_after: int | None = None  # seconds a 429 asks the client to wait (Bitbucket Cloud sends none)
    latency: float = 0.0  # seconds every answer takes: a real site's round trip
    seed: int = 0
    validate: bool = True  # against the OpenAPI description; the benchmark turns it off to measure the function
    statuses: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (repository, commit, key)
    reports: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (repository, commit, id)
    # (repository, commit, report id) → external_id → annotation; kept when the report is replaced, as Bitbucket
    # keeps them, and deleted with it
    annotations: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    public: set[str] = field(default_factory=set)  # "workspace/slug" of public repositories (others are private)
    report_answer: int | None = None  # what a report PUT is answered instead (400, 403, 500 ...)
    history: list[tuple[tuple[str, str, str], dict[str, Any]]] = field(default_factory=list)
    commit_messages: dict[tuple[str, str], str] = field(default_factory=dict)  # ("workspace/slug", commit) → message
    calls: list[Call] = field(default_factory=list)
    scripted: deque[str] = field(default_factory=deque)  # faults for the next requests, in order
    peers: set[tuple[str, str]] = field(default_factory=set)  # client (address, port): one per connection
    authorizations: list[str] = field(default_factory=list)  # every Authorization header received
    _oauth_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    _spent: dict[str, deque[float]] = field(default_factory=dict)  # identity → times of its accepted calls
    _reach: dict[str, set[str]] = field(default_factory=dict)  # a repository access token → its repositories
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _random: random.Random | None = None

    # --- what tests configure -------------------------------------------------

    def accept_basic(self, username: str, password: str) -> None:
        remember_basic(username, password)
        self.basic[username] = password

    def accept_token(self, token: str, repositories: set[str] | None = None) -> None:
        """An access token; with `repositories`, a repository access token that reaches only those."""
        remember_secret(token)
        self.tokens.add(token)
        if repositories is not None:
            self._reach[token_identity(token)] = set(repositories)

    def accept_consumer(self, client_id: str, secret: str) -> None:
        remember_basic(client_id, secret)
        self.consumers[client_id] = secret

    def revoke_all(self) -> None:
        with self._lock:
            self.basic.clear()
            self.tokens.clear()
            self.consumers.clear()
            self._reach.clear()
            self._oauth_tokens.clear()

    def fail_next(self, *faults: str) -> None:
        self.scripted.extend(faults)

    # --- what tests read ------------------------------------------------------

    def shown(self, workspace: str, slug: str, commit: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(s) for (repo, c, _), s in self.statuses.items() if repo == f"{workspace}/{slug}" and c == commit
            ]

    def went_backwards(self) -> list[dict[str, Any]]:
        return went_backwards(self.history)

    def status_calls(self) -> list[Call]:
        """The calls to the commit-status endpoints (not the reports) that were answered."""
        return [c for c in self.calls if STATUSES.fullmatch(c.path) and c.fault is None]

    def report_calls(self) -> list[Call]:
        """The calls to the reports themselves (not their annotations)."""
        return [c for c in self.calls if REPORTS.fullmatch(c.path) and c.fault is None and "/annotations" not in c.path]

    def commit_calls(self) -> list[Call]:
        """The reads of a commit (its message)."""
        return [c for c in self.calls if COMMIT.fullmatch(c.path)]

    # --- the WSGI application ---------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self.latency:
            time.sleep(self.latency)
        request = Request(environ)
        with self._lock:
            self.peers.add((environ.get("REMOTE_ADDR", ""), environ.get("REMOTE_PORT", "")))
            self.authorizations.append(request.headers.get("Authorization", ""))
        fault = self._fault(request)
        if fault == "drop":
            self._record(request, 0, None, fault)
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
            return Response("", 500)(environ, start_response)
        if fault == "timeout":
            # The request is applied, and its answer comes too late for the client.
            response = self._handle(request)
            self._record(request, response.status_code, request.get_json(silent=True), fault)
            time.sleep(self.fault_delay)
            return response(environ, start_response)
        if fault == "429":
            response = error(429, "Rate limit for this resource has been exceeded")
            if self.retry_after is not None:
                response.headers["Retry-After"] = str(self.retry_after)
        elif fault and fault.isdigit():
            response = error(int(fault), "Something went wrong" if fault >= "500" else "Bad request")
        else:
            response = self._over_budget(request) or self._handle(request)
        self._rate_headers(request, response)
        self._record(request, response.status_code, request.get_json(silent=True), fault)
        return response(environ, start_response)

    def _over_budget(self, request: Request) -> Response | None:
        """429 once a credential has made `budget` calls in the window; otherwise the call is counted."""
        identity = self._identity(request)
        if self.budget is None or identity is None:
            return None
        with self._lock:
            spent = self._spent_by(identity)
            if len(spent) >= self.budget:
                return error(429, "Rate limit for this resource has been exceeded")
            spent.append(time.monotonic())
        return None

    def _spent_by(self, identity: str) -> deque[float]:
        spent = self._spent.setdefault(identity, deque())
        while spent and time.monotonic() - spent[0] > self.budget_window:
            spent.popleft()
        return spent

    def _rate_headers(self, request: Request, response: Response) -> None:
        """Access tokens (not API tokens, not OAuth consumers) get Bitbucket's three X-RateLimit-* headers."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self.tokens or not request.path.startswith("/2.0/"):
            return
        limit = self.budget or 1000
        with self._lock:
            used = len(self._spent_by(token_identity(token)))
        response.headers["X-RateLimit-Limit"] = str(limit)
        response.headers["X-RateLimit-Resource"] = "api/repositories"
        response.headers["X-RateLimit-NearLimit"] = "true" if used >= self.near_limit_share * limit else "false"

    def _fault(self, request: Request) -> str | None:
        with self._lock:
            if self.scripted:
                return self.scripted.popleft()
            if self.fault_rate:
                if self._random is None:
                    self._random = random.Random(self.seed)
                if self._random.random() < self.fault_rate:
                    return self._random.choice(self.faults)
        return None

    def _record(self, request: Request, status: int, body: Any, fault: str | None) -> None:
        with self._lock:
            raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI", "")
            self.calls.append(Call(request.method, request.path, status, raw_uri, body, fault))

    def _handle(self, request: Request) -> Response:
        if request.path == TOKEN_PATH and request.method == "POST":
            return self._token(request)
        if request.path == STATS_PATH:
            return json_body({"connections": len(self.peers), "calls": len(self.calls)})
        identity = self._identity(request)
        if identity is None:
            return error(401, "Access token expired or invalid credentials")
        if self.validate:
            result = openapi().unmarshal_request(WerkzeugOpenAPIRequest(request))
            if result.errors:
                problems = "; ".join(_explain(e) for e in result.errors)
                status = 404 if any(type(e).__name__.endswith("NotFound") for e in result.errors) else 400
                return error(status, f"Bad request: {problems}")
            body = result.body
        else:
            body = request.get_json(silent=True)
        match = STATUSES.fullmatch(request.path) or REPORTS.fullmatch(request.path)
        if not match and (found := REPOSITORY.fullmatch(request.path)) and request.method == "GET":
            return self._repository(f"{found['workspace']}/{found['slug']}", identity)
        if not match and (found := COMMIT.fullmatch(request.path)) and request.method == "GET":
            return self._commit(f"{found['workspace']}/{found['slug']}", found["commit"], identity)
        if not match:
            return error(404, "Resource not found")
        repository = f"{match['workspace']}/{match['slug']}"
        if self.repositories and repository not in self.repositories:
            return error(404, f"Repository {repository} not found")
        if identity in self._reach and repository not in self._reach[identity]:
            return error(403, f"This access token does not grant access to {repository}")
        commit = match["commit"]
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            return error(404, f"Commit {commit} not found")
        with self._lock:
            if "report" in match.groupdict() and match["annotations"]:
                return self._annotate(request.method, repository, commit, match["report"], body, identity)
            if "report" in match.groupdict():
                return self._report(request.method, repository, commit, match["report"], body, identity)
            if request.method == "POST" and match["key"] is None and request.path.endswith("/build"):
                return self._write(repository, commit, dict(body or {}), identity, create=True)
            if request.method == "PUT" and match["key"]:
                body = dict(body or {})
                if body.get("key", match["key"]) != match["key"]:
                    return error(400, "key: cannot be changed", {"key": ["cannot be changed"]})
                body["key"] = match["key"]
                return self._write(repository, commit, body, identity, create=False)
            if request.method == "GET" and match["key"]:
                shown = self.statuses.get((repository, commit, match["key"]))
                return json_body(shown) if shown else error(404, "No such status")
            if request.method == "GET" and request.path.endswith("/statuses"):
                workspace, slug = repository.split("/")
                values = self.shown(workspace, slug, commit)
                return json_body({"values": values, "pagelen": len(values) or 10, "size": len(values), "page": 1})
        return error(405, "Method not allowed")

    def _write(self, repository: str, commit: str, body: dict[str, Any], identity: str, *, create: bool) -> Response:
        key = body["key"]
        if len(key) > 40:
            return error(
                400,
                "key: Ensure this value has at most 40 characters",
                {"key": ["Ensure this value has at most 40 characters"]},
            )
        if body.get("state") not in ("INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"):
            return error(400, "state: invalid", {"state": ["invalid"]})
        identity_key = (repository, commit, key)
        existing = self.statuses.get(identity_key)
        if existing is None and not create:
            return error(404, "No such status")
        if existing is not None and existing["_creator"] != identity:
            return error(403, "Only the creator of a build status can update it")
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        status = {
            "type": "build",
            "key": key,
            "state": body["state"],
            "name": body.get("name", ""),
            "url": body.get("url", ""),
            "description": body.get("description", ""),
            "refname": body.get("refname"),
            "created_on": existing["created_on"] if existing else now,
            "updated_on": now,
            "_creator": identity,
        }
        self.statuses[identity_key] = status
        self.history.append((identity_key, dict(status)))
        return json_body(status, 201 if create and existing is None else 200)

    def _repository(self, repository: str, identity: str) -> Response:
        if self.repositories and repository not in self.repositories:
            return error(404, f"Repository {repository} not found")
        if identity in self._reach and repository not in self._reach[identity]:
            return error(403, f"This access token does not grant access to {repository}")
        workspace, slug = repository.split("/")
        return json_body({"type": "repository", "full_name": repository, "slug": slug, "name": slug,
                      "is_private": repository not in self.public, "workspace": {"slug": workspace}})  # fmt: skip

    def _commit(self, repository: str, commit: str, identity: str) -> Response:
        if self.repositories and repository not in self.repositories:
            return error(404, f"Repository {repository} not found")
        if identity in self._reach and repository not in self._reach[identity]:
            return error(403, f"This access token does not grant access to {repository}")
        message = self.commit_messages.get((repository, commit))
        if message is None:
            return error(404, f"Commit {commit} not found")
        slug = repository.split("/")[1]
        return json_body({"type": "commit", "hash": commit, "message": message, "date": "2026-01-05T08:00:00+00:00",
                          "author": {"type": "author", "raw": "Dev <dev@acme.example>"},
                          "summary": {"raw": message, "markup": "markdown", "html": ""}, "parents": [],
                          "repository": {"type": "repository", "full_name": repository, "name": slug}})  # fmt: skip

    def _annotate(self, method: str, repository: str, commit: str, report: str, body: Any, identity: str) -> Response:
        """POST creates or updates a report's annotations (by external_id), at most 100 a request; GET lists them."""
        key = (repository, commit, report)
        if method == "GET":
            values = list(self.annotations.get(key, {}).values())
            return json_body({"values": values, "pagelen": len(values) or 10, "size": len(values), "page": 1})
        if method != "POST":
            return error(405, "Method not allowed")
        annotated = self.reports.get(key)
        if annotated is None:
            return error(404, "No such report")
        if annotated["_creator"] != identity:
            return error(403, "Only the creator of a report may annotate it")
        LOGS.append(json.dumps(body))  # scanned for credentials, like the tests' output
        for annotation in body:
            if len(annotation.get("summary", "")) > SUMMARY_MAX:
                return error(400, f"summary: Ensure this value has at most {SUMMARY_MAX} characters")
        stored = self.annotations.setdefault(key, {})
        for annotation in body:
            stored[annotation.get("external_id") or secrets.token_hex(8)] = dict(annotation)
        return json_body([dict(a) for a in body])

    def _report(self, method: str, repository: str, commit: str, report_id: str, body: Any, identity: str) -> Response:
        """PUT creates or replaces a Code Insights report (its annotations stay); GET reads it; DELETE deletes it with
        its annotations."""
        if method == "GET":
            found = self.reports.get((repository, commit, report_id))
            return json_body(found) if found else error(404, "No such report")
        if method == "DELETE":
            found = self.reports.get((repository, commit, report_id))
            if found is None:
                return error(404, "No such report")
            if found["_creator"] != identity:
                return error(403, "Only the creator of a report may delete it")
            del self.reports[(repository, commit, report_id)]
            self.annotations.pop((repository, commit, report_id), None)
            return Response(status=204)
        if method != "PUT":
            return error(405, "Method not allowed")
        if self.report_answer is not None:
            return error(self.report_answer, "Report refused" if self.report_answer < 500 else "Something went wrong")
        body = dict(body)
        LOGS.append(json.dumps(body))  # scanned for credentials, like the tests' output
        for name in ("title", "details", "report_type"):
            if not body.get(name):
                return error(400, f"{name}: This field is required.", {name: ["This field is required."]})
        if len(body.get("data") or []) > REPORT_DATA_MAX:
            return error(400, f"data: at most {REPORT_DATA_MAX} data fields", {"data": ["too many"]})
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        existing = self.reports.get((repository, commit, report_id))
        report = {**body, "external_id": report_id, "created_on": existing["created_on"] if existing else now,
                  "updated_on": now, "_creator": identity}  # fmt: skip
        self.reports[(repository, commit, report_id)] = report
        return json_body(report)

    def shown_reports(self, workspace: str, slug: str, commit: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(r) for (repo, c, _), r in self.reports.items() if repo == f"{workspace}/{slug}" and c == commit
            ]

    def shown_annotations(self, workspace: str, slug: str, commit: str) -> list[dict[str, Any]]:
        """Every annotation on the commit, of any report."""
        with self._lock:
            return [dict(a) for (repo, c, _), found in self.annotations.items() if repo == f"{workspace}/{slug}"
                    and c == commit for a in found.values()]  # fmt: skip

    def annotation_calls(self) -> list[Call]:
        return [c for c in self.calls if REPORTS.fullmatch(c.path) and c.path.endswith("/annotations")]

    def _identity(self, request: Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        with self._lock:
            if scheme == "Basic":
                username, _, password = _basic(value)
                if username in self.basic and secrets.compare_digest(self.basic[username], password):
                    return f"user:{username}"
            if scheme == "Bearer":
                if value in self.tokens:
                    return token_identity(value)
                consumer = self._oauth_tokens.get(value)
                if consumer and consumer[1] > time.monotonic():
                    return f"consumer:{consumer[0]}"
        return None

    def _token(self, request: Request) -> Response:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        client_id, _, secret = _basic(value) if scheme == "Basic" else ("", "", "")
        with self._lock:
            if request.form.get("grant_type") != "client_credentials":
                return json_body({"error": "unsupported_grant_type"}, 400)
            if client_id not in self.consumers or not secrets.compare_digest(self.consumers[client_id], secret):
                return json_body(
                    {"error": "invalid_client", "error_description": "Invalid OAuth client credentials"}, 400
                )
            token = new_secret()
            self._oauth_tokens[token] = (client_id, time.monotonic() + self.token_lifetime)
        return json_body(
            {"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime, "scopes": "repository"}
        )

    # --- serving ----------------------------------------------------------------

    def spec(self) -> OpenAPI:
        return openapi()

    def serve(self, port: int = 0, ssl_context: Any = None) -> Server:
        return Server(self, port, ssl_context)


class Server:
    """The stand-in on a loopback port, in a thread, until `stop()`."""

    def __init__(self, app: Any, port: int = 0, ssl_context: Any = None) -> None:
        self.app = app
        if app.validate:
            app.spec()  # loaded before the first request, which would otherwise wait a second for it
        self._server = make_server("127.0.0.1", port, app, threaded=True, ssl_context=ssl_context)
        self._server.daemon_threads = True  # type: ignore[attr-defined]  # ThreadedWSGIServer's, from socketserver
        self._server.block_on_close = False  # type: ignore[attr-defined]  # a stalled answer must not hold up stop()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request is noise here
        self.port = self._server.server_port
        scheme = "https" if ssl_context else "http"
        self.root = f"{scheme}://127.0.0.1:{self.port}"
        self.api_url = f"{self.root}/2.0"
        self.token_url = f"{self.root}{TOKEN_PATH}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        shut_down(self._server)


def went_backwards(history: list[tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Statuses of a history that went from a build's final state back to in progress for that same build
    (a build is known by its url: both log URL shapes end in the build id)."""
    finals: dict[Any, set[str]] = {}
    backwards = []
    for identity, status in history:
        done = finals.setdefault(identity, set())
        if status["state"] == "INPROGRESS" and status["url"] in done:
            backwards.append(status)
        elif status["state"] != "INPROGRESS":
            done.add(status["url"])
    return backwards


def went_to_older(history: list[tuple[Any, dict[str, Any]]], created: dict[str, str]) -> list[dict[str, Any]]:
    """Statuses of a history that replaced a newer build's status with an older build's, under one identity
    (a build is known by the id its url ends in; `created` gives each build's createTime)."""
    newest: dict[Any, str] = {}
    older = []
    for identity, status in history:
        build_id = status["url"].split("?")[0].rsplit("/", 1)[-1]
        shown = newest.get(identity)
        if shown is not None and created[build_id] < created[shown]:
            older.append(status)
        elif shown is None or created[build_id] > created[shown]:
            newest[identity] = build_id
    return older


def token_identity(token: str) -> str:
    """Who an access token acts as (its own bot user), as the stand-in records a status's creator."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def _basic(value: str) -> tuple[str, str, str]:
    try:
        return base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return ("", "", "")


def json_body(body: Any, status: int = 200) -> Response:
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if not k.startswith("_")}
    return Response(json.dumps(body), status, content_type="application/json")


def _explain(problem: Exception) -> str:
    causes = getattr(problem, "__cause__", None)
    details = getattr(causes, "schema_errors", None) or []
    text = type(problem).__name__
    if details:
        text += ": " + ", ".join(getattr(d, "message", str(d)) for d in details)
    return text


def keep_alive_app() -> Bitbucket:
    """For a server that keeps connections open (gunicorn; Werkzeug's closes each one):
    `gunicorn 'standins.bitbucket:keep_alive_app()'` with STANDIN_TOKEN (and STANDIN_LATENCY, seconds) set;
    standins.processes.KeepAliveStandin runs it."""
    app = Bitbucket(validate=False, latency=float(os.environ.get("STANDIN_LATENCY") or 0))
    app.accept_token(os.environ["STANDIN_TOKEN"])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8929)
    parser.add_argument("--token", action="append", default=[], help="an access token to accept")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM) ...")
    parser.add_argument("--tls-key", help="... and this key")
    parser.add_argument("--no-validate", action="store_true", help="skip the OpenAPI validation (benchmarks)")
    args = parser.parse_args()
    app = Bitbucket(validate=not args.no_validate)
    for token in args.token:
        app.accept_token(token)
    context = None
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    server = app.serve(args.port, context)
    print(f"Bitbucket stand-in on {server.api_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
