"""Google stand-ins on loopback: an OAuth token endpoint, Cloud KMS, Secret Manager, the repositories of
Cloud Build's API v2 (GET /v2/projects/P/locations/L/connections/C/repositories/R), and its builds (GET
/v1/projects/P/locations/L/builds/ID, and the listing of a location's builds, newest first, paged, with a
`create_time>"…"` or `>=` filter).

The real client libraries talk to these over their REST transport: a
service-account file whose `token_uri` points here gets a token, and KMS and
Secret Manager requests must carry it. KMS encrypts for real (AES-GCM, one key
per key name), so a ciphertext only decrypts with the key that made it.
Cloud Storage is served by `gcp-storage-emulator` (see `storage()`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from standins import new_secret, shut_down

KMS_ACTION = re.compile(r"/v1/(?P<name>projects/[^:]+/cryptoKeys/[^/:]+):(?P<action>encrypt|decrypt)")
CLOUD_BUILD_REPOSITORY = re.compile(
    r"/v2/(?P<name>projects/[^/]+/locations/[^/]+/connections/[^/]+/repositories/[^/]+)"
)
CLOUD_BUILD_BUILD = re.compile(r"/v1/(?P<name>projects/[^/]+/locations/[^/]+/builds/[^/]+)")
CLOUD_BUILD_LIST = re.compile(r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/builds")
# The one filter the listing understands: AIP-160's comparison of create_time with an RFC 3339 timestamp.
CREATE_TIME_FILTER = re.compile(r'\s*create_time\s*(?P<op>>=|>)\s*"(?P<time>[^"]+)"\s*')
PAGE_SIZE = 50  # what the listing answers when the request names no pageSize
LOGGING_LIST = "/v2/entries:list"
# Cloud Logging's query language, as far as the function uses it: field="value" terms (backslash escapes) joined by
# AND, with one parenthesised OR of terms.
FILTER_TOKEN = re.compile(
    r'\s*(?:(?P<term>(?P<field>[A-Za-z_.]+)(?P<op>>=|=)(?:"(?P<value>(?:[^"\\]|\\.)*)"|(?P<bare>[A-Z]+)))'
    r"|(?P<word>AND|OR)|(?P<paren>[()]))"
)
FILTER_FIELDS = {"logName", "resource.type", "resource.labels.build_id", "labels.build_step",
                 "resource.labels.service_name", "severity", "timestamp"}  # fmt: skip
SEVERITIES = ["DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"]
VIEW_NAME = re.compile(r"projects/(?P<project>[^/]+)/locations/global/buckets/_Default/views/(?P<view>[^/]+)")
# google.rpc.Code's name for each HTTP status a test has a stand-in answer instead
ANSWER_REASONS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                  500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip
SECRET_ACCESS = re.compile(r"/v1/(?P<secret>projects/[^/]+/secrets/[^/]+)/versions/(?P<version>[^/:]+):access")


def json_body(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")


def _google_error(status: int, message: str, reason: str) -> Response:
    return json_body({"error": {"code": status, "message": message, "status": reason}}, status)


@dataclass
class Google:
    """Token endpoint, KMS and Secret Manager; counts what is asked of each."""

    keys: dict[str, bytes] = field(default_factory=dict)
    secrets: dict[str, list[bytes]] = field(default_factory=dict)  # secret name → versions, oldest first
    counts: Counter[str] = field(default_factory=Counter)
    trusted_keys: list[str] = field(default_factory=list)  # service-account public keys (PEM)
    repositories: dict[str, str] = field(default_factory=dict)  # Cloud Build repository name → its remoteUri
    builds: dict[str, dict[str, Any]] = field(default_factory=dict)  # projects/P/locations/L/builds/ID → Build
    # What Cloud Build's API answers instead of the repository: 403 (the caller lacks cloudbuild.repositories.get),
    # 400, 408, 500 ...; None: the repository.
    cloud_build_answer: int | None = None
    refuse_tokens: bool = False  # the token endpoint answers invalid_grant (a disabled service account)
    # A broken listing: every page is the first one again, and names these page tokens in turn as the next.
    token_cycle: tuple[str, ...] = ()
    # A listing that does not end: this many pages are each the first one again, naming a page token never given
    # before; the page asked with the last of them ends the listing.
    fresh_tokens: int = 0
    log_entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # project → Cloud Logging's entries
    log_views: set[str] = field(default_factory=set)  # views the caller may read through (projects/P/.../views/V)
    logging_answer: int | None = None  # what entries.list answers instead: 403, 429, 500 ...
    log_filters: list[str] = field(default_factory=list)  # every filter entries.list was sent
    secret_delay: float = 0.0  # seconds Secret Manager takes to answer
    secret_answer: int | None = None  # what Secret Manager answers instead of the version: 403, 429, 500 ...
    kms_answer: int | None = None  # what KMS answers instead of decrypting: 403, 429, 500 ...
    kms_delay: float = 0.0  # seconds KMS takes to answer
    _tokens: set[str] = field(default_factory=set)
    _listed: tuple[Any, list[dict[str, Any]]] = ((), [])
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def encrypt(self, key_name: str, plaintext: bytes) -> bytes:
        key = self.keys.setdefault(key_name, AESGCM.generate_key(bit_length=256))
        nonce = os.urandom(12)
        return nonce + AESGCM(key).encrypt(nonce, plaintext, key_name.encode())

    def add_secret_version(self, secret: str, payload: bytes) -> str:
        with self._lock:
            versions = self.secrets.setdefault(secret, [])
            versions.append(payload)
            return f"{secret}/versions/{len(versions)}"

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if request.path == "/token" and request.method == "POST":
            return self._token(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not self._authentic(token):
            return _google_error(401, "Request had invalid authentication credentials.", "UNAUTHENTICATED")
        if (match := KMS_ACTION.fullmatch(request.path)) and request.method == "POST":
            return self._kms(match["name"], match["action"], request.get_json(silent=True) or {})
        if request.path == LOGGING_LIST and request.method == "POST":
            return self._entries(request.get_json(silent=True) or {})
        if (match := SECRET_ACCESS.fullmatch(request.path)) and request.method == "GET":
            return self._access(match["secret"], match["version"])
        if (match := CLOUD_BUILD_REPOSITORY.fullmatch(request.path)) and request.method == "GET":
            return self._cloud_build("repositories", match["name"], self.repositories)
        if (match := CLOUD_BUILD_LIST.fullmatch(request.path)) and request.method == "GET":
            return self._list_builds(match["project"], match["location"], request.args)
        if (match := CLOUD_BUILD_BUILD.fullmatch(request.path)) and request.method == "GET":
            return self._cloud_build("builds", match["name"], self.builds)
        return _google_error(404, f"{request.path} not found", "NOT_FOUND")

    def _authentic(self, token: str) -> bool:
        """A token this server issued, or a JWT self-signed by a known service account."""
        if token in self._tokens:
            return True
        from google.auth import jwt

        for pem in self.trusted_keys:
            try:
                jwt.decode(token, certs=pem, verify=True)  # type: ignore[no-untyped-call]  # google-auth: no hints
            except ValueError:
                continue
            with self._lock:
                self.counts["self-signed-jwt"] += 1
            return True
        return False

    def _token(self, request: Request) -> Response:
        if request.form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return json_body({"error": "unsupported_grant_type"}, 400)
        if self.refuse_tokens or len(request.form.get("assertion", "").split(".")) != 3:
            return json_body({"error": "invalid_grant"}, 400)
        token = new_secret()
        with self._lock:
            self._tokens.add(token)
            self.counts["token"] += 1
        return json_body({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def _kms(self, name: str, action: str, body: dict[str, Any]) -> Response:
        time.sleep(self.kms_delay)
        with self._lock:
            self.counts[f"kms.{action}"] += 1
        if self.kms_answer is not None:
            reason = ANSWER_REASONS.get(self.kms_answer, "UNKNOWN")
            return _google_error(self.kms_answer, "KMS could not answer", reason)
        try:
            data = base64.b64decode(body.get("plaintext" if action == "encrypt" else "ciphertext", ""), validate=True)
        except ValueError:
            return _google_error(400, "Invalid base64", "INVALID_ARGUMENT")
        if action == "encrypt":
            return json_body({"name": name, "ciphertext": base64.b64encode(self.encrypt(name, data)).decode()})
        key = self.keys.get(name)
        if key is None:
            return _google_error(404, f"{name} not found", "NOT_FOUND")
        try:
            plaintext = AESGCM(key).decrypt(data[:12], data[12:], name.encode())
        except Exception:
            return _google_error(400, "Decryption failed: the ciphertext is invalid.", "INVALID_ARGUMENT")
        return json_body({"plaintext": base64.b64encode(plaintext).decode()})

    def _access(self, secret: str, version: str) -> Response:
        time.sleep(self.secret_delay)
        with self._lock:
            self.counts["secretmanager.access"] += 1
            if self.secret_answer is not None:
                reason = ANSWER_REASONS.get(self.secret_answer, "UNKNOWN")
                return _google_error(self.secret_answer, "Secret Manager could not answer", reason)
            versions = self.secrets.get(secret)
            if not versions:
                return _google_error(404, f"Secret [{secret}] not found or has no versions.", "NOT_FOUND")
            number = len(versions) if version == "latest" else int(version) if version.isdigit() else 0
            if not 1 <= number <= len(versions):
                return _google_error(404, f"Secret Version [{secret}/versions/{version}] not found.", "NOT_FOUND")
            payload = versions[number - 1]
        return json_body(
            {"name": f"{secret}/versions/{number}", "payload": {"data": base64.b64encode(payload).decode()}}
        )

    def write_log(
        self, project: str, build_id: str, steps: dict[str, list[str]], last: str = "ERROR", lag: float = 0.0
    ) -> None:
        """A build's log as Cloud Build writes it to Cloud Logging: one entry a line, each step's under its label
        (`Step #N - "id"`), Cloud Build's own under MAIN ("starting build" first; `last`, unless "", at the end);
        entries become visible `lag` seconds from now, as Cloud Logging's do."""
        visible = time.monotonic() + lag
        labelled = [("MAIN", f'starting build "{build_id}"')]
        for label, lines in steps.items():
            labelled += [(label, line) for line in lines]
        if last:
            labelled.append(("MAIN", last))
        with self._lock:
            entries = self.log_entries.setdefault(project, [])
            start = len(entries)
            for n, (label, text) in enumerate(labelled):
                entries.append({
                    "logName": f"projects/{project}/logs/cloudbuild", "insertId": f"{build_id}-{start + n}",
                    "resource": {"type": "build", "labels": {"build_id": build_id, "project_id": project}},
                    "labels": {"build_step": label}, "textPayload": text,
                    "timestamp": f"2026-11-27T09:{(start + n) // 60000 % 60:02}:{(start + n) // 1000 % 60:02}."
                                 f"{(start + n) % 1000:03}000000Z",
                    "_visible": visible,
                })  # fmt: skip

    def write_function_log(self, project: str, service: str, lines: list[tuple[str, str, str]]) -> None:
        """The function's own structured lines, as Cloud Run writes them: (severity, message, timestamp) each."""
        with self._lock:
            entries = self.log_entries.setdefault(project, [])
            for severity, message, timestamp in lines:
                entries.append({
                    "logName": f"projects/{project}/logs/run.googleapis.com%2Fstdout", "severity": severity,
                    "resource": {"type": "cloud_run_revision", "labels": {"service_name": service}},
                    "jsonPayload": {"message": message}, "timestamp": timestamp, "_visible": 0.0,
                })  # fmt: skip

    def _entries(self, body: dict[str, Any]) -> Response:
        """entries.list: the entries of the named resources that the filter selects, in the order asked, paged."""
        with self._lock:
            self.counts["logging.entries.list"] += 1
            self.log_filters.append(str(body.get("filter")))
        if self.logging_answer is not None:
            reason = {403: "PERMISSION_DENIED", 429: "RESOURCE_EXHAUSTED"}.get(self.logging_answer, "UNAVAILABLE")
            return _google_error(self.logging_answer, "Cloud Logging could not answer", reason)
        names = body.get("resourceNames")
        if not isinstance(names, list) or len(names) != 1:
            return _google_error(400, "resourceNames: one resource", "INVALID_ARGUMENT")
        view = VIEW_NAME.fullmatch(names[0])
        if view and names[0] not in self.log_views:
            return _google_error(403, f"Permission 'logging.views.access' denied on '{names[0]}'", "PERMISSION_DENIED")
        if not view and not re.fullmatch(r"projects/[^/]+", names[0]):
            return _google_error(400, f"Invalid resource name {names[0]}", "INVALID_ARGUMENT")
        clauses = _parse_filter(str(body.get("filter", "")))
        order, size = body.get("orderBy", "timestamp asc"), body.get("pageSize", 50)
        if clauses is None or order not in ("timestamp asc", "timestamp desc") or not 0 < size <= 1000:
            return _google_error(400, "Invalid filter, orderBy or pageSize", "INVALID_ARGUMENT")
        project = (view["project"] if view else names[0]).removeprefix("projects/")
        now = time.monotonic()
        with self._lock:
            found = [e for e in self.log_entries.get(project, []) if e["_visible"] <= now and _selects(clauses, e)]
        found.sort(key=lambda e: e["timestamp"], reverse=order == "timestamp desc")
        start = int(body.get("pageToken") or 0)
        page: dict[str, Any] = {"entries": [{k: v for k, v in e.items() if not k.startswith("_")}
                                            for e in found[start : start + size]]}  # fmt: skip
        if start + size < len(found):
            page["nextPageToken"] = str(start + size)
        return json_body(page)

    def record(self, *builds: dict[str, Any]) -> None:
        """Builds Cloud Build's API knows, named as their log URL names them (project number and region)."""
        for build in builds:
            path = build["logUrl"].split("?")[0]
            region = path.split("builds;region=")[1].split("/")[0] if ";region=" in path else "global"
            project = build["logUrl"].split("project=")[1]
            self.builds[f"projects/{project}/locations/{region}/builds/{build['id']}"] = dict(build)

    def _list_builds(self, project: str, location: str, args: Any) -> Response:
        """A location's builds, newest first, `pageSize` at a time; `pageToken` is where the previous page ended."""
        with self._lock:
            self.counts["cloudbuild.builds.list"] += 1
        if self.cloud_build_answer == 403:
            return _google_error(
                403, "The caller does not have permission (cloudbuild.builds.list)", "PERMISSION_DENIED"
            )
        if self.cloud_build_answer is not None:
            return _google_error(self.cloud_build_answer, "Cloud Build could not answer", "UNAVAILABLE")
        since = CREATE_TIME_FILTER.fullmatch(args.get("filter", "")) if args.get("filter") else None
        if args.get("filter") and since is None:
            return _google_error(400, "Invalid filter", "INVALID_ARGUMENT")
        token = args.get("pageToken", "")
        with self._lock:
            turn = self.counts["cloudbuild.builds.list"]
            fresh = self.fresh_tokens > 0
            self.fresh_tokens -= fresh
        if self.token_cycle or token.startswith("fresh-"):
            token = ""
        if token and not token.isdigit():
            return _google_error(400, "Invalid page token", "INVALID_ARGUMENT")
        found = self._listing(project, location, since["time"] if since else None, since and since["op"] == ">=")
        start, size = int(token or 0), int(args.get("pageSize") or PAGE_SIZE)
        page: dict[str, Any] = {"builds": found[start : start + size]}
        if start + size < len(found):
            page["nextPageToken"] = str(start + size)
        if self.token_cycle:
            page["nextPageToken"] = self.token_cycle[turn % len(self.token_cycle)]
        if fresh:
            page["nextPageToken"] = f"fresh-{turn}"
        return json_body(page)

    def _listing(self, project: str, location: str, since: str | None, inclusive: bool | None) -> list[dict[str, Any]]:
        """A location's builds created since then, newest first; kept while no build is added (a listing of 100,000
        builds is asked for page after page)."""
        key = (project, location, since, inclusive, len(self.builds))
        if self._listed[0] != key:
            found = [
                build
                for name, build in self.builds.items()
                if name.split("/")[3] == location and project in (name.split("/")[1], build.get("projectId"))
                and (since is None or _after(build["createTime"], since, bool(inclusive)))
            ]  # fmt: skip
            found.sort(key=lambda b: _instant(b["createTime"]), reverse=True)
            self._listed = (key, found)
        return self._listed[1]

    def _cloud_build(self, kind: str, name: str, known: dict[str, Any]) -> Response:
        """GET of a repository of a connection (v2) or of a build (v1), or the answer a test set."""
        with self._lock:
            self.counts[f"cloudbuild.{kind}.get"] += 1
        if self.cloud_build_answer == 403:
            return _google_error(403, f"Permission 'cloudbuild.{kind}.get' denied on '{name}'", "PERMISSION_DENIED")
        if self.cloud_build_answer is not None:
            return _google_error(self.cloud_build_answer, "Cloud Build could not answer", "UNAVAILABLE")
        if name not in known:
            return _google_error(404, f"{name} not found", "NOT_FOUND")
        if kind == "builds":
            return json_body({"name": name, **known[name]})
        return json_body({"name": name, "remoteUri": known[name], "createTime": "2026-01-01T00:00:00Z"})

    def serve(self) -> GoogleServer:
        return GoogleServer(self)


def _parse_filter(text: str) -> list[list[tuple[str, str]]] | None:
    """A filter as AND of clauses, each an OR of (field, value); None for anything else."""
    clauses: list[list[tuple[str, str]]] = []
    group: list[tuple[str, str]] | None = None
    expect_term, position = True, 0
    while position < len(text.rstrip()):
        token = FILTER_TOKEN.match(text, position)
        if token is None:
            return None
        position = token.end()
        if token["term"] and expect_term:
            if token["field"] not in FILTER_FIELDS:
                return None
            value = token["bare"] if token["bare"] is not None else re.sub(r"\\(.)", r"\1", token["value"])
            term = (token["field"] + (">=" if token["op"] == ">=" else ""), value)
            if group is None:
                clauses.append([term])
            else:
                group.append(term)
            expect_term = False
        elif token["word"] and not expect_term and (token["word"] == "OR") == (group is not None):
            expect_term = True
        elif token["paren"] == "(" and expect_term and group is None:
            group = []
            clauses.append(group)
        elif token["paren"] == ")" and not expect_term and group is not None:
            group = None
        else:
            return None
    return clauses if clauses and not expect_term and group is None else None


def _selects(clauses: list[list[tuple[str, str]]], entry: dict[str, Any]) -> bool:
    def value(field: str) -> Any:
        found: Any = entry
        for part in field.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        return found

    def holds(field: str, wanted: str) -> bool:
        if not field.endswith(">="):
            return bool(value(field) == wanted)
        found = str(value(field[:-2]) or "")
        if field == "severity>=":
            return found in SEVERITIES and wanted in SEVERITIES and SEVERITIES.index(found) >= SEVERITIES.index(wanted)
        if field == "timestamp>=":  # compared as instants, whatever digits of a second either names
            return bool(found) and _instant(found) >= _instant(wanted)
        return found >= wanted

    return all(any(holds(field, wanted) for field, wanted in clause) for clause in clauses)


def _instant(value: str) -> datetime:
    """An RFC 3339 timestamp, with up to nanoseconds as Cloud Build writes them."""
    whole, _, rest = value.rstrip("Z").partition(".")
    fraction = "".join(c for c in rest if c.isdigit())[:6]
    return datetime.fromisoformat(f"{whole}.{fraction or 0}+00:00")


def _after(created: str, since: str, inclusive: bool) -> bool:
    moment, bound = _instant(created), _instant(since)
    return moment >= bound if inclusive else moment > bound


class GoogleServer:
    def __init__(self, app: Google) -> None:
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self._server.daemon_threads = True  # type: ignore[attr-defined]  # ThreadedWSGIServer's, from socketserver
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request is noise here
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def service_account_file(self, directory: Path) -> Path:
        """A service-account key whose token endpoint is this server."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        self.app.trusted_keys.append(
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        path = directory / "service-account.json"
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "local-project",
                    "private_key_id": "local",
                    "private_key": pem,
                    "client_email": "bitbucket-build-status@local-project.iam.gserviceaccount.com",
                    "client_id": "1",
                    "token_uri": f"{self.endpoint}/token",
                }
            )
        )
        return path

    def stop(self) -> None:
        shut_down(self._server)


LISTED_PAGE_MAX = 1000  # objects.list answers at most this many entries a page (and that many when not told)


def listed_in_pages(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> None:
    """objects.list as Cloud Storage answers it, where the emulator lists a bucket whole whatever it is asked: its
    entries (objects and, with a delimiter, prefixes) in name order, a page of at most `maxResults` of them (at
    most 1,000), and a `nextPageToken` that the next page starts after while any are left."""
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import BadRequest, NotFound  # type: ignore[import-untyped]  # no hints

    query = {key: values[0] for key, values in request.query.items() if values}
    storage.listings = [*getattr(storage, "listings", []), query]
    try:
        items, prefixes = storage.get_file_list(request.params["bucket_name"], query.get("prefix"),
                                                query.get("delimiter"), query.get("matchGlob"))  # fmt: skip
    except NotFound:
        response.status = HTTPStatus.NOT_FOUND
        return
    except BadRequest:
        response.status = HTTPStatus.BAD_REQUEST
        return
    entries = sorted([(item["name"], item) for item in items] + [(prefix, None) for prefix in prefixes],
                     key=lambda entry: entry[0])  # fmt: skip
    after = query.get("pageToken", "")
    left = [entry for entry in entries if entry[0] > after] if after else entries
    page = left[: min(int(query.get("maxResults", LISTED_PAGE_MAX)), LISTED_PAGE_MAX)]
    answer: dict[str, Any] = {"kind": "storage#objects", "items": [item for _, item in page if item is not None],
                              "prefixes": [name for name, item in page if item is None]}  # fmt: skip
    if len(page) < len(left):
        answer["nextPageToken"] = page[-1][0]
    response.json(answer)


def downloaded_at_generation(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> None:
    """objects.get (alt=media) as Cloud Storage answers it, where the emulator serves the object whatever generation
    is asked: a generation other than the object's live one is not found (a bucket without versioning keeps no
    other); and the bytes it serves are counted."""
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import NotFound  # type: ignore[import-untyped,unused-ignore]
    from gcp_storage_emulator.handlers import objects  # type: ignore[import-untyped,unused-ignore]

    asked = request.query.get("generation", [""])[0]
    try:
        live = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])["generation"]
    except NotFound:
        live = ""
    if asked and asked != live:
        response.status = HTTPStatus.NOT_FOUND
        return
    write = response.write_file

    def counted(content: bytes, *written: Any, **named: Any) -> None:
        storage.served = getattr(storage, "served", 0) + len(content)
        write(content, *written, **named)

    response.write_file = counted
    objects.download(request, response, storage, *args, **kwargs)


class Storage:
    """gcp-storage-emulator on a loopback port, listing a bucket in pages and serving an object's generations as
    Cloud Storage does; counts object downloads, the bytes they served, and what each listing asked."""

    def __init__(self) -> None:
        from gcp_storage_emulator import server  # type: ignore[import-untyped]  # it ships no hints
        from gcp_storage_emulator.handlers import objects  # type: ignore[import-untyped,unused-ignore]

        for _, handlers in server.HANDLERS:  # the emulator's routes: each method's handler
            if handlers.get("GET") is objects.ls:
                handlers["GET"] = listed_in_pages
            if handlers.get("GET") is objects.download:
                handlers["GET"] = downloaded_at_generation
        self._server = server.create_server("127.0.0.1", 0, in_memory=True)
        self._server.start()
        self.host = f"http://127.0.0.1:{self._server._api._httpd.server_port}"
        self.downloads = 0
        storage = self._server._storage
        read = storage.get_file

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.downloads += 1
            return read(*args, **kwargs)

        storage.get_file = counted

    @property
    def served(self) -> int:
        """The bytes the object downloads served, in all."""
        return int(getattr(self._server._storage, "served", 0))

    @property
    def listings(self) -> list[dict[str, str]]:
        """The query of each listing asked, in order."""
        return list(getattr(self._server._storage, "listings", []))

    def put(self, bucket: str, name: str, data: bytes) -> int:
        """Upload with the real client library, as `gcloud storage cp` would; the object's generation."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage  # type: ignore[attr-defined,import-untyped,unused-ignore]  # no hints

        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]  # google-auth: no hints
        client = storage.Client(
            project="local-project", credentials=anonymous, client_options={"api_endpoint": self.host}
        )
        target = client.bucket(bucket)
        if not target.exists():
            client.create_bucket(bucket)
        blob = target.blob(name)
        blob.upload_from_string(data)
        return int(blob.generation)

    def stop(self) -> None:
        self._server.stop()
