"""A Bitbucket Data Center stand-in: the build-status endpoints of a server under a context path, on loopback.

Like the Cloud stand-in it behaves as the server does: every request is validated against
Atlassian's OpenAPI description of Data Center 9.2 (openapi-core), HTTP access tokens are accepted
as Bearer and personal tokens or passwords as Basic, a status is identified by repository, commit
and key, a POST answers 204, a GET ?key=K answers the status or 404, and errors come as
{"errors": [{"message": ...}]}. It also serves a commit (its message, from `commit_messages`; 404 for
a commit not set there) and a commit's deployments (7.16+): a deployment is identified by repository,
key, environment key and sequence number, and a POST of the same one replaces it (Data Center has no
update sequence number: the last write wins). It remembers every Authorization header it was sent, so
a test can prove a credential never reached it. Serve it over TLS with a certificate of a private CA
(standins.tls), as enterprises do.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import random
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
from werkzeug.wrappers import Request, Response

from standins import LOGS, remember_basic, remember_secret
from standins.bitbucket import Call, Server, token_identity, went_backwards

SPEC = Path(__file__).resolve().parent / "data" / "specs" / "bitbucket-datacenter-9.2.openapi.json.gz"
BUILDS = "/api/latest/projects/{projectKey}/repos/{repositorySlug}/commits/{commitId}/builds"
INSIGHTS = "/insights/latest/projects/{projectKey}/repos/{repositorySlug}/commits/{commitId}/reports/{key}"
ANNOTATIONS = f"{INSIGHTS}/annotations"
REPOSITORY = "/api/latest/projects/{projectKey}/repos/{repositorySlug}"
COMMIT = f"{REPOSITORY}/commits/{{commitId}}"
DEPLOYMENTS = f"{COMMIT}/deployments"
CONTEXT = "/bitbucket"
REPORT_PATH = re.compile(
    rf"{CONTEXT}/rest/insights/latest/projects/(?P<project>[^/]+)/repos/(?P<slug>[^/]+)/commits/(?P<commit>[^/]+)"
    r"/reports/(?P<key>[^/]+)(?P<annotations>/annotations)?"
)
REPOSITORY_PATH = re.compile(rf"{CONTEXT}/rest/api/latest/projects/(?P<project>[^/]+)/repos/(?P<slug>[^/]+)")
COMMIT_PATH = re.compile(
    rf"{CONTEXT}/rest/api/latest/projects/(?P<project>[^/]+)/repos/(?P<slug>[^/]+)/commits/(?P<commit>[^/]+)"
    r"(?P<deployments>/deployments)?"
)
# A deployment environment's type: the description's pattern is unanchored, the server means one of these
ENVIRONMENT_TYPES = ("DEVELOPMENT", "TESTING", "STAGING", "PRODUCTION")
ANNOTATIONS_MAX = 1000  # a report's annotations: "A report cannot have more than 1000 annotations by default"
DETAILS_MAX = 2000  # "Max length: 2000 characters" (the description's table; its schema gives none)
PATH = re.compile(
    rf"{CONTEXT}/rest/api/latest/projects/(?P<project>[^/]+)/repos/(?P<slug>[^/]+)/commits/(?P<commit>[^/]+)/builds"
)


@functools.cache
def openapi() -> OpenAPI:
    """Atlassian's description of the paths the function uses, served under the context path.
    Relaxed in one respect: it lists the request bodies of statuses and deployments as */*, which
    openapi-core cannot parse; the server takes JSON."""
    spec = json.loads(gzip.decompress(SPEC.read_bytes()))
    spec["paths"] = {
        path: spec["paths"][path] for path in (BUILDS, INSIGHTS, ANNOTATIONS, REPOSITORY, COMMIT, DEPLOYMENTS)
    }
    for path in (BUILDS, DEPLOYMENTS):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        content["application/json"] = content.pop("*/*")
    # A data field's value is typed "object", yet its own example is 9: the value's type is left to `type`.
    del spec["components"]["schemas"]["RestInsightReportData"]["properties"]["value"]["type"]
    spec["servers"] = [{"url": f"{CONTEXT}/rest"}]
    return OpenAPI.from_dict(spec)


def errors(status: int, message: str) -> Response:
    return Response(json.dumps({"errors": [{"message": message}]}), status, content_type="application/json")


@dataclass
class DataCenter:
    """State and behaviour; `serve()` puts it on a loopback port; `url(server)` is its base URL."""

    repositories: set[str] = field(default_factory=set)  # "PROJECT/slug"; empty = any
    tokens: set[str] = field(default_factory=set)
    basic: dict[str, str] = field(default_factory=dict)
    retry_after: int | None = None  # seconds a scripted 429 asks the client to wait
    fault_rate: float = 0.0  # share of calls answered 500, 502 or 503
    seed: int = 0
    validate: bool = True
    statuses: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    reports: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (repository, commit, key)
    report_answer: int | None = None  # what a report PUT is answered instead (400, 403, 500 ...)
    # (repository, commit, report key) → its annotations, in the order posted: no de-duplication (Atlassian's
    # description), kept when the report is replaced, deleted with it
    annotations: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    public: set[str] = field(default_factory=set)  # "PROJECT/slug" of public repositories
    public_projects: set[str] = field(default_factory=set)
    history: list[tuple[tuple[str, str, str], dict[str, Any]]] = field(default_factory=list)
    commit_messages: dict[tuple[str, str], str] = field(default_factory=dict)  # ("PROJECT/slug", commit) → message
    # (repository, key, environment key, deploymentSequenceNumber) → the deployment, with the commit it deployed
    deployments: dict[tuple[str, str, str, int], dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)  # every Authorization header received
    scripted: deque[str] = field(default_factory=deque)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _random: random.Random | None = None

    def accept_token(self, token: str) -> None:
        remember_secret(token)
        self.tokens.add(token)

    def accept_basic(self, username: str, password: str) -> None:
        remember_basic(username, password)
        self.basic[username] = password

    def fail_next(self, *faults: str) -> None:
        self.scripted.extend(faults)

    def spec(self) -> OpenAPI:
        return openapi()

    def serve(self, port: int = 0, ssl_context: Any = None) -> Server:
        return Server(self, port, ssl_context)

    @staticmethod
    def url(server: Server) -> str:
        return f"{server.root}{CONTEXT}"

    # --- what tests read ------------------------------------------------------

    def shown(self, project: str, slug: str, commit: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for (repo, c, _), s in self.statuses.items() if repo == f"{project}/{slug}" and c == commit]

    def status_calls(self) -> list[Call]:
        """The calls to the build-status endpoint (not the reports)."""
        return [c for c in self.calls if PATH.fullmatch(c.path)]

    def report_calls(self) -> list[Call]:
        """The calls to the reports themselves (not their annotations)."""
        return [c for c in self.calls if REPORT_PATH.fullmatch(c.path) and not c.path.endswith("/annotations")]

    def annotation_calls(self) -> list[Call]:
        return [c for c in self.calls if REPORT_PATH.fullmatch(c.path) and c.path.endswith("/annotations")]

    def shown_annotations(self, project: str, slug: str, commit: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(a) for (repo, c, _), found in self.annotations.items()
                    if repo == f"{project}/{slug}" and c == commit for a in found]  # fmt: skip

    def went_backwards(self) -> list[dict[str, Any]]:
        return went_backwards(self.history)

    def deployments_for(self, project: str, slug: str, commit: str) -> list[dict[str, Any]]:
        """The deployments shown on the commit, in order of (key, environment key, sequence number)."""
        with self._lock:
            found = sorted((key, d) for key, d in self.deployments.items() if key[0] == f"{project}/{slug}")
            return [dict(d) for _, d in found if d["toCommit"]["id"] == commit]

    def commit_calls(self) -> list[Call]:
        """The reads of a commit (its message)."""
        return [c for c in self.calls if (found := COMMIT_PATH.fullmatch(c.path)) and not found["deployments"]]

    def deployment_calls(self) -> list[Call]:
        return [c for c in self.calls if (found := COMMIT_PATH.fullmatch(c.path)) and found["deployments"]]

    # --- the WSGI application ---------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.authorizations.append(request.headers.get("Authorization", ""))
            fault = self.scripted.popleft() if self.scripted else None
            if fault is None and self.fault_rate:
                self._random = self._random or random.Random(self.seed)
                if self._random.random() < self.fault_rate:
                    fault = self._random.choice(("500", "502", "503"))
        if fault == "429":
            response = errors(429, "Rate limit exceeded")
            if self.retry_after is not None:
                response.headers["Retry-After"] = str(self.retry_after)
        elif fault:
            response = errors(int(fault), "Something went wrong")
        else:
            response = self._handle(request)
        with self._lock:
            raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI", "")
            self.calls.append(Call(request.method, request.path, response.status_code, raw_uri,
                                   request.get_json(silent=True), fault))  # fmt: skip
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        identity = self._identity(request)
        if identity is None:
            return errors(401, "Authentication failed. Please check your credentials and try again.")
        if found := COMMIT_PATH.fullmatch(request.path):
            return self._commit(request, found)
        match = PATH.fullmatch(request.path) or REPORT_PATH.fullmatch(request.path)
        if not match and (found := REPOSITORY_PATH.fullmatch(request.path)) and request.method == "GET":
            project, slug = found["project"], found["slug"]
            if self.repositories and f"{project}/{slug}" not in self.repositories:
                return errors(404, f"Repository {slug} of project {project} does not exist.")
            body = {"slug": slug, "name": slug, "public": f"{project}/{slug}" in self.public,
                    "project": {"key": project, "public": project in self.public_projects}}  # fmt: skip
            return Response(json.dumps(body), 200, content_type="application/json")
        if not match:
            return errors(404, "Not found")
        if self.validate:
            result = openapi().unmarshal_request(WerkzeugOpenAPIRequest(request))
            if result.errors:
                return errors(400, "; ".join(_explain(e) for e in result.errors))
        repository = f"{match['project']}/{match['slug']}"
        if self.repositories and repository not in self.repositories:
            return errors(404, f"Repository {match['slug']} of project {match['project']} does not exist.")
        if not re.fullmatch(r"[0-9a-f]{40}", match["commit"]):
            return errors(400, "The commit is not valid")
        with self._lock:
            if "key" in match.groupdict() and match["annotations"]:
                return self._annotate(request.method, repository, match["commit"], match["key"], request)
            if "key" in match.groupdict():
                return self._report(request.method, repository, match["commit"], match["key"], request)
            if request.method == "GET":
                status = self.statuses.get((repository, match["commit"], request.args.get("key", "")))
                return (
                    Response(json.dumps(status), 200, content_type="application/json")
                    if status
                    else errors(404, "No build status with that key")
                )
            if request.method == "POST":
                return self._write(repository, match["commit"], request.get_json(silent=True) or {})
        return errors(405, "Method not allowed")

    def _annotate(self, method: str, repository: str, commit: str, key: str, request: Request) -> Response:
        """POST adds annotations to a report (no de-duplication; a request past the limit is refused whole); GET
        lists them."""
        found = self.annotations.get((repository, commit, key), [])
        if method == "GET":
            return Response(json.dumps({"annotations": found}), 200, content_type="application/json")
        if method != "POST":
            return errors(405, "Method not allowed")
        report = self.reports.get((repository, commit, key))
        if report is None:
            return errors(404, "No such report")
        if report["_creator"] != token_identity(request.headers.get("Authorization", "")):
            return errors(401, "The authenticated user is not the author of the report")
        added = (request.get_json(silent=True) or {}).get("annotations") or []
        LOGS.append(json.dumps(added))  # scanned for credentials, like the tests' output
        if len(found) + len(added) > ANNOTATIONS_MAX:
            return errors(400, f"A report cannot have more than {ANNOTATIONS_MAX} annotations")
        if any(a.get("severity") not in ("LOW", "MEDIUM", "HIGH") for a in added):  # the pattern is unanchored
            return errors(400, "severity must be one of LOW, MEDIUM, HIGH")
        self.annotations.setdefault((repository, commit, key), []).extend(dict(a) for a in added)
        return Response(status=204)

    def _report(self, method: str, repository: str, commit: str, key: str, request: Request) -> Response:
        """PUT creates or replaces a Code Insights report (only its creator may replace it; its annotations stay);
        GET reads it; DELETE deletes it and its annotations."""
        if method == "GET":
            found = self.reports.get((repository, commit, key))
            return (
                Response(json.dumps(found), 200, content_type="application/json") if found else errors(404, "No report")
            )
        if method == "DELETE":
            if (repository, commit, key) not in self.reports:
                return errors(404, "No report")
            del self.reports[(repository, commit, key)]
            self.annotations.pop((repository, commit, key), None)
            return Response(status=204)
        if method != "PUT":
            return errors(405, "Method not allowed")
        if self.report_answer is not None:
            return errors(self.report_answer, "Report refused" if self.report_answer < 500 else "Something went wrong")
        body = request.get_json(silent=True) or {}
        LOGS.append(json.dumps(body))  # scanned for credentials, like the tests' output
        if len(body.get("details", "")) > DETAILS_MAX:
            return errors(400, f"details must be at most {DETAILS_MAX} characters")
        if body.get("result", "PASS") not in ("PASS", "FAIL"):  # the schema's pattern is unanchored; the table's
            return errors(400, "result must be one of PASS, FAIL")  # "One of: PASS, FAIL" is what a server means
        identity = token_identity(request.headers.get("Authorization", ""))
        existing = self.reports.get((repository, commit, key))
        if existing is not None and existing["_creator"] != identity:
            return errors(403, "Only the creator of a report may replace it")
        now = int(time.time() * 1000)
        report = {**body, "key": key, "createdDate": existing["createdDate"] if existing else now, "_creator": identity}
        self.reports[(repository, commit, key)] = report
        return Response(json.dumps({**body, "key": key}), 200, content_type="application/json")

    def shown_reports(self, project: str, slug: str, commit: str) -> list[dict[str, Any]]:
        with self._lock:
            return [{k: v for k, v in r.items() if k != "_creator"} for (repo, c, _), r in self.reports.items()
                    if repo == f"{project}/{slug}" and c == commit]  # fmt: skip

    def _write(self, repository: str, commit: str, body: dict[str, Any]) -> Response:
        for name, limit in (("key", 255), ("url", 450), ("name", 255), ("parent", 1024), ("ref", 1024)):
            if len(str(body.get(name, ""))) > limit:
                return errors(400, f"{name} must be at most {limit} characters")
        identity = (repository, commit, body["key"])
        now = int(time.time() * 1000)
        existing = self.statuses.get(identity)
        status = {**body, "createdDate": existing["createdDate"] if existing else now, "updatedDate": now}
        self.statuses[identity] = status
        self.history.append((identity, dict(status)))
        return Response(status=204)

    def _commit(self, request: Request, found: re.Match[str]) -> Response:
        """GET a commit (its message), POST or GET a deployment of it."""
        if self.validate:
            result = openapi().unmarshal_request(WerkzeugOpenAPIRequest(request))
            if result.errors:
                return errors(400, "; ".join(_explain(e) for e in result.errors))
        repository, commit = f"{found['project']}/{found['slug']}", found["commit"]
        if self.repositories and repository not in self.repositories:
            return errors(404, f"Repository {found['slug']} of project {found['project']} does not exist.")
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            return errors(400, "The commit is not valid")
        with self._lock:
            if found["deployments"] and request.method == "POST":
                return self._deploy(repository, commit, request.get_json(silent=True) or {})
            if found["deployments"] and request.method == "GET":
                args = request.args
                key = (
                    repository,
                    args.get("key", ""),
                    args.get("environmentKey", ""),
                    args.get("deploymentSequenceNumber", ""),
                )
                shown = next((d for k, d in self.deployments.items() if tuple(map(str, k)) == key), None)
                return json_body(shown) if shown else errors(404, "No such deployment")
            if found["deployments"] or request.method != "GET":
                return errors(405, "Method not allowed")
            message = self.commit_messages.get((repository, commit))
        if message is None:
            return errors(404, f"Commit '{commit}' does not exist in repository '{found['slug']}'.")
        person = {"name": "Dev", "emailAddress": "dev@acme.example"}
        return json_body({"id": commit, "displayId": commit[:11], "message": message, "author": person,
                          "authorTimestamp": 1_700_000_000_000, "committer": person,
                          "committerTimestamp": 1_700_000_000_000, "parents": []})  # fmt: skip

    def _deploy(self, repository: str, commit: str, body: dict[str, Any]) -> Response:
        """Create or replace a deployment: the environment needs a key and a display name (the description's
        RestDeployment requires both), and its type is one of ENVIRONMENT_TYPES when given."""
        LOGS.append(json.dumps(body))  # scanned for credentials, like the tests' output
        environment = body.get("environment") or {}
        if not environment.get("key") or not environment.get("displayName"):
            return errors(400, "environment: a key and a displayName are required")
        if "type" in environment and environment["type"] not in ENVIRONMENT_TYPES:
            return errors(400, f"environment.type must be one of {', '.join(ENVIRONMENT_TYPES)}")
        project, slug = repository.split("/")
        deployment = {**body, "lastUpdated": body.get("lastUpdated", int(time.time() * 1000)),
                      "toCommit": {"id": commit, "displayId": commit[:11]},
                      "repository": {"slug": slug, "name": slug, "project": {"key": project}}}  # fmt: skip
        identity = (
            repository,
            str(body.get("key")),
            str(environment["key"]),
            int(body.get("deploymentSequenceNumber", 0)),
        )
        self.deployments[identity] = deployment
        return json_body(deployment)

    def _identity(self, request: Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            if scheme == "Bearer" and value in self.tokens:
                return "token"
            if scheme == "Basic":
                try:
                    user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    return None
                if user in self.basic and secrets.compare_digest(self.basic[user], password):
                    return f"user:{user}"
        return None


def json_body(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")


def _explain(problem: Exception) -> str:
    details = getattr(getattr(problem, "__cause__", None), "schema_errors", None) or []
    return type(problem).__name__ + (
        ": " + ", ".join(getattr(d, "message", str(d)) for d in details) if details else ""
    )
