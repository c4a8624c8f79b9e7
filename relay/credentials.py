from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from relay.config import Patterns
from relay.errors import ConfigurationError, ConsumerRefused, NotServed, TransientError
from relay.repository import normalized_server
from relay.scope import current_project, google_timeout, storage_call
from relay.text import as_text, clip
from relay.transport import json_body, send, token_lifetime

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    import requests

    from relay.repository import Repository


CONSUMER = "OAuth consumer"
SHAPES = (("Basic", ("username", "password")), (CONSUMER, ("client_id", "client_secret")), ("Bearer", ("token",)))
SHAPES_TEXT = '{"username": ..., "password": ...}, {"token": ...} or {"client_id": ..., "client_secret": ...}'
ENTRY_FIELDS = frozenset(
    {
        "username",
        "password",
        "client_id",
        "client_secret",
        "token",
        "repositories",
        "projects",
        "server",
        "ca_certificate",
    }
)
JIRA_FIELDS = frozenset({"jira", "client_id", "client_secret", "repositories", "projects", "server", "cloud_id"})
BITBUCKET_CLOUD = "https://bitbucket.org"  # a Jira entry's "server" for Bitbucket Cloud's repositories only
CLOUD_ID_RE = r"(?a)[A-Za-z0-9-]{1,100}"  # a path segment of Atlassian's API: no '/' or dots
FIELD_NAME_RE = r"(?a)[a-z_]{1,40}"  # an unknown field is named only if it looks like a name
PATTERN_RE = r"(?a)(?<![!-~])[!-~]+/[!-~]+"  # workspace/repo_slug, or PROJECT/repo_slug on a server
PROJECT_PATTERN_RE = r"(?a)[a-z0-9.:*?!\[\]-]{1,100}"  # Google Cloud project IDs, shell-style


@dataclass(frozen=True)
class Credential:
    """One entry of the credentials document: a credential and the repositories it serves.
    repr never shows the secret."""

    position: int  # 1-based, how log lines and errors name the entry
    scheme: str  # "Basic", "Bearer", or CONSUMER (exchanged for a Bearer token)
    secret: str = field(repr=False)
    repositories: Patterns = field(default_factory=Patterns)  # none: every repository of its site
    server: str | None = None  # a Data Center server's base URL; None: Bitbucket Cloud
    ca_certificate: str | None = None  # PEM of the CA that signed the server's certificate
    projects: Patterns = field(default_factory=Patterns)  # the Google Cloud projects whose builds it serves; none: any

    def serves(self, repository: Repository, project: str = "") -> bool:
        if not self.on_site_of(repository) or not self.repositories.match(repository.full_name):
            return False
        return not self.projects or (bool(project) and self.projects.match(project))

    def on_site_of(self, repository: Repository) -> bool:
        """Whether this entry's site is the repository's (an SSH clone URL names only the host)."""
        if repository.ssh_host is not None:
            return self.server is not None and urlsplit(self.server).hostname == repository.ssh_host
        return self.server == repository.server

    def authorization(self) -> str:
        scheme = "Basic" if self.scheme == CONSUMER else self.scheme
        return f"{scheme} {self.secret}"


@dataclass(frozen=True)
class JiraEntry:
    """An entry of the credentials document for a Jira site (Jira settings → Apps → OAuth credentials): its client id
    and secret, the repositories and projects whose builds it is told of. repr never shows the secret."""

    position: int
    site: str  # https://acme.atlassian.net
    client_id: str
    secret: str = field(repr=False)
    repositories: Patterns = field(default_factory=Patterns)  # none: every repository
    projects: Patterns = field(default_factory=Patterns)  # none: any Google Cloud project
    cloud_id: str | None = None  # the site's cloud id, when the entry gives it (else asked of the site)
    server: str | None = None  # the Bitbucket site whose builds it is told of (BITBUCKET_CLOUD, or a Data Center
    # server's URL); None: every site's

    def serves(self, repository: Repository, project: str = "") -> bool:
        if self.server not in (None, repository.server or BITBUCKET_CLOUD):
            return False
        if not self.repositories.match(repository.full_name):
            return False
        return not self.projects or (bool(project) and self.projects.match(project))


def parse_credentials(raw: str | bytes, where: str) -> tuple[Credential | JiraEntry, ...]:
    """The credentials document: one credential object, or a JSON array of entries.
    Errors name `where` and the entry's position, never a value."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        data = None
    if isinstance(data, dict):
        return (_entry(data, 1, where),)
    if isinstance(data, list) and data:
        return tuple(_entry(item, n, f"entry {n} of {where}") for n, item in enumerate(data, 1))
    raise ConfigurationError(
        f"{where} does not hold Bitbucket credentials: expected JSON {SHAPES_TEXT}, "
        "or a non-empty array of such objects"
    )


def _entry(data: Any, position: int, where: str) -> Credential | JiraEntry:
    if not isinstance(data, dict):
        raise ConfigurationError(f"{where} is not a JSON object")
    if "jira" in data:
        return _jira_entry(data, position, where)
    if "cloud_id" in data:
        raise ConfigurationError(f'{where} has a "cloud_id" but no "jira": a Jira entry names its site')
    if unknown := _unknown_fields(data, ENTRY_FIELDS):
        raise ConfigurationError(f"{where} has an unknown field: {unknown}")
    nulls = sorted(name for name, value in data.items() if value is None)
    if nulls:  # a null is not an absent field: {"server": null} must not become a Bitbucket Cloud entry
        raise ConfigurationError(f"{where} has a null {', '.join(repr(n) for n in nulls)}: leave a field out instead")
    shapes = [(scheme, names) for scheme, names in SHAPES if any(name in data for name in names)]
    if len(shapes) != 1 or not _all_text(*(data.get(name) for name in shapes[0][1])):
        raise ConfigurationError(f"{where} does not hold Bitbucket credentials: expected exactly one of {SHAPES_TEXT}")
    scheme, names = shapes[0]
    server, ca_certificate = _site(data, scheme, where)
    if scheme == "Bearer":
        secret = data["token"]
        if not secret.isascii():  # an HTTP header cannot carry it (e.g. a pasted '…')
            raise ConfigurationError(f"{where} holds a token with a character outside ASCII")
    else:
        user, password = (data[name] for name in names)
        if ":" in user:
            raise ConfigurationError(f"{where} holds a {names[0]} with a ':', which HTTP Basic cannot carry")
        secret = base64.b64encode(f"{user}:{password}".encode()).decode()
    repositories, projects = _patterns(data, "repositories", where), _patterns(data, "projects", where)
    return Credential(position, scheme, secret, repositories, server, ca_certificate, projects)


def _unknown_fields(data: Mapping[str, Any], known: frozenset[str]) -> str:
    """The fields an entry may not hold, each named only if it looks like a name (never a value pasted as a key)."""
    unknown = sorted(set(data) - known)
    return ", ".join(repr(n) if re.fullmatch(FIELD_NAME_RE, n) else "(a field that is not a name)" for n in unknown)


def _jira_entry(data: Mapping[str, Any], position: int, where: str) -> JiraEntry:
    if unknown := _unknown_fields(data, JIRA_FIELDS):
        raise ConfigurationError(f"{where} is a Jira entry with a field it cannot hold: {unknown}")
    site = normalized_server(data["jira"]) if isinstance(data["jira"], str) else None
    if site is None:
        raise ConfigurationError(f'{where} has a "jira" that is not an https:// URL of a Jira site')
    if not _all_text(data.get("client_id"), data.get("client_secret")):
        raise ConfigurationError(f'{where} is a Jira entry without its "client_id" and "client_secret"')
    cloud_id = data.get("cloud_id")
    if cloud_id is not None and not (isinstance(cloud_id, str) and re.fullmatch(CLOUD_ID_RE, cloud_id)):
        raise ConfigurationError(f'{where} has a "cloud_id" that is not a cloud id (letters, digits and dashes)')
    server = data.get("server")
    bitbucket = normalized_server(server) if isinstance(server, str) else None
    if server is not None and bitbucket is None:
        raise ConfigurationError(
            f'{where} has a "server" that is neither {BITBUCKET_CLOUD} nor an https:// URL of a Data Center server'
        )
    repositories, projects = _patterns(data, "repositories", where), _patterns(data, "projects", where)
    return JiraEntry(position, site, data["client_id"], data["client_secret"], repositories, projects, cloud_id,
                     bitbucket)  # fmt: skip


def _site(data: Mapping[str, Any], scheme: str, where: str) -> tuple[str | None, str | None]:
    """A Data Center entry's server and CA certificate, checked; (None, None) for Bitbucket Cloud."""
    if "server" not in data:
        if "ca_certificate" in data:
            raise ConfigurationError(f'{where} has a "ca_certificate" but no "server"')
        return None, None
    server, ca = data["server"], data.get("ca_certificate")
    normalized = normalized_server(server) if isinstance(server, str) else None
    if normalized is None:
        raise ConfigurationError(f'{where} has a "server" that is not an https:// URL (plain http only on loopback)')
    if scheme == CONSUMER:
        raise ConfigurationError(f"{where} is an OAuth consumer, which only Bitbucket Cloud has, with a server")
    if ca is not None and not _is_certificate(ca):
        raise ConfigurationError(f'{where} has a "ca_certificate" that is not a PEM certificate')
    return normalized, ca


def _is_certificate(pem: Any) -> bool:
    import ssl

    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        return False
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError):
        return False
    return True


# The entry's lists of patterns: what each pattern must look like, and how an error names the list.
PATTERN_LISTS = {
    "repositories": (PATTERN_RE, '"workspace/repo_slug" patterns'),
    "projects": (PROJECT_PATTERN_RE, "project ID patterns"),
}


def _patterns(data: Mapping[str, Any], name: str, where: str) -> Patterns:
    if name not in data:
        return Patterns()
    value, (shape, what) = data[name], PATTERN_LISTS[name]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(p, str) and re.fullmatch(shape, p) for p in value)
    ):
        raise ConfigurationError(f'{where} has "{name}" that are not a list of {what}')
    return Patterns(tuple(value))


def _all_text(*values: Any) -> bool:
    return all(isinstance(v, str) and v and v.isprintable() for v in values)


class CredentialSource(Protocol):
    local: bool  # read without a client or a network call of the function's own (a file, the environment)

    def fetch(self) -> tuple[Credential | JiraEntry, ...]: ...


class FileCredentials:
    """BITBUCKET_CREDENTIALS_FILE: a file, such as a secret Cloud Run mounts, which it reads from
    Secret Manager each time the file is read: a new version reaches warm instances, no client needed."""

    local = True

    def __init__(self, path: str) -> None:
        self.path = path

    def fetch(self) -> tuple[Credential | JiraEntry, ...]:
        where = f"BITBUCKET_CREDENTIALS_FILE ({self.path})"
        try:
            with open(self.path, "rb") as file:
                raw = file.read()
        except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as error:
            raise ConfigurationError(f"{where} cannot be read: {error.strerror}") from None
        except OSError as error:  # a mounted secret that Secret Manager could not serve this time
            raise TransientError(f"{where} cannot be read: {error.strerror or type(error).__name__}") from None
        return parse_credentials(raw, where)


class EnvironmentCredentials:
    """BITBUCKET_CREDENTIALS: the JSON itself (local runs, --set-secrets), read from the environment each time."""

    local = True

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def fetch(self) -> tuple[Credential | JiraEntry, ...]:
        return parse_credentials(self.env.get("BITBUCKET_CREDENTIALS", ""), "BITBUCKET_CREDENTIALS")


class SecretManagerCredentials:
    """CREDENTIALS_SECRET: a Secret Manager secret, its latest version unless one is named."""

    local = False

    def __init__(self, secret: str, endpoint: str | None = None) -> None:
        self.secret = secret
        self.endpoint = endpoint
        self._client: Any = None

    def fetch(self) -> tuple[Credential | JiraEntry, ...]:
        if self._client is None:
            from google.cloud import secretmanager

            options = {"api_endpoint": self.endpoint} if self.endpoint else None
            self._client = secretmanager.SecretManagerServiceClient(transport="rest", client_options=options)
        version = self.secret if "/versions/" in self.secret else f"{self.secret}/versions/latest"
        try:
            timeout = google_timeout()
            answer = self._client.access_secret_version(name=version, retry=_retry(timeout), timeout=timeout)
            payload = answer.payload.data
        except Exception as error:  # google.api_core errors, imported lazily
            raise _google_error(error, version) from None
        return parse_credentials(payload, f"{version} (CREDENTIALS_SECRET)")


@dataclass
class BucketCredentials:
    """A KMS-encrypted object in a bucket: the original function's design."""

    local = False
    bucket: str
    blob: str
    key_id: str
    kms_endpoint: str | None = None
    _clients: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    def fetch(self) -> tuple[Credential | JiraEntry, ...]:
        storage_client, kms_client = self._get_clients()
        where = f"gs://{self.bucket}/{self.blob}"
        try:
            blob = storage_client.bucket(self.bucket).blob(self.blob)
            ciphertext = blob.download_as_bytes(**storage_call(google_timeout()))
            request, timeout = {"name": self.key_id, "ciphertext": ciphertext}, google_timeout()
            plaintext = kms_client.decrypt(request=request, retry=_retry(timeout), timeout=timeout).plaintext
        except Exception as error:  # google.api_core errors, imported lazily
            raise _google_error(error, where) from None
        return parse_credentials(plaintext, f"{where} (decrypted with KMS_CRYPTO_KEY_ID)")

    def _get_clients(self) -> tuple[Any, Any]:
        if self._clients is None:
            from google.cloud import kms, storage  # type: ignore[attr-defined]  # storage ships no type hints

            options = {"api_endpoint": self.kms_endpoint} if self.kms_endpoint else None
            self._clients = (
                storage.Client(),
                kms.KeyManagementServiceClient(transport="rest", client_options=options),
            )
        return self._clients


def _retry(timeout: float) -> Any:
    """Google's clients retry a service that is overloaded or unavailable for 60 s whatever a call's timeout (Cloud
    Storage's for 120 s): here only until the call's timeout, the event's deadline."""
    from google.api_core import retry

    return retry.Retry(predicate=retry.if_transient_error, timeout=timeout)


def _google_error(error: Exception, where: str) -> Exception:
    code = getattr(error, "code", None)
    summary = f"{type(error).__name__}" + (f" {code}" if code else "")
    if code in (400, 403, 404):
        return ConfigurationError(f"reading credentials from {where} failed: {summary}: {error}")
    return TransientError(f"reading credentials from {where} failed: {summary}: {error}")


SINGLE_VARIABLES = ("BITBUCKET_CREDENTIALS_FILE", "BITBUCKET_CREDENTIALS", "CREDENTIALS_SECRET")
BUCKET_VARIABLES = ("SECRETS_BUCKET", "SECRETS_OBJECT", "KMS_CRYPTO_KEY_ID")
SECRET_RE = r"(?a)projects/[^/]+/secrets/[^/]+(?:/versions/[^/]+)?"  # noqa: S105 (a pattern)


def credential_source(env: Mapping[str, str]) -> CredentialSource:
    """The one credential source the environment configures."""
    found = [v for v in (*SINGLE_VARIABLES, *BUCKET_VARIABLES) if env.get(v)]
    sources = {"BUCKET" if v in BUCKET_VARIABLES else v for v in found}
    if len(sources) > 1:
        raise ConfigurationError(f"configure exactly one credential source, found {', '.join(found)}")
    if "BITBUCKET_CREDENTIALS_FILE" in sources:
        return FileCredentials(env["BITBUCKET_CREDENTIALS_FILE"])
    if "BITBUCKET_CREDENTIALS" in sources:
        return EnvironmentCredentials(env)
    if "CREDENTIALS_SECRET" in sources:
        if not re.fullmatch(SECRET_RE, env["CREDENTIALS_SECRET"]):
            raise ConfigurationError(
                "CREDENTIALS_SECRET must be projects/PROJECT/secrets/SECRET, optionally with /versions/VERSION"
            )
        return SecretManagerCredentials(env["CREDENTIALS_SECRET"], env.get("SECRET_MANAGER_API_ENDPOINT"))
    if sources:
        missing = [v for v in BUCKET_VARIABLES if v not in found]
        if missing:
            raise ConfigurationError(f"the bucket credential source also needs {', '.join(missing)}")
        bucket, blob, key = (env[v] for v in BUCKET_VARIABLES)
        return BucketCredentials(bucket, blob, key, env.get("KMS_API_ENDPOINT"))
    raise ConfigurationError(
        "no Bitbucket credentials configured: set one of BITBUCKET_CREDENTIALS_FILE, BITBUCKET_CREDENTIALS, "
        "CREDENTIALS_SECRET, or SECRETS_BUCKET with SECRETS_OBJECT and KMS_CRYPTO_KEY_ID"
    )


@dataclass
class Keyring:
    """The credentials document, read from its source on the first event that needs it and again,
    once, when Bitbucket refuses one of its credentials (so a rotated entry reaches warm instances);
    and one OAuth token per consumer entry, kept until shortly before it expires."""

    SERVED_MEMORY = 4096  # repositories whose serving entry is remembered until the document is read again

    source: CredentialSource
    session: requests.Session
    token_url: str
    timeout: Any
    _entries: tuple[Credential, ...] | None = field(default=None, init=False)
    _jira: tuple[JiraEntry, ...] = field(default=(), init=False)
    _served: dict[tuple[Repository, str], Credential | None] = field(default_factory=dict, init=False)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict, init=False)  # secret → (header, renew at)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)

    def load(self) -> tuple[Credential, ...]:
        """The document's entries, read from its source on first use (and after a credential was refused)."""
        with self._lock:
            if self._entries is None:
                entries = self.source.fetch()
                self._entries = tuple(e for e in entries if isinstance(e, Credential))
                self._jira = tuple(e for e in entries if isinstance(e, JiraEntry))
                self._served = {}
            return self._entries

    def read_again(self) -> None:
        """The document is read again before its next use (Atlassian refused a Jira entry: it may be rotated)."""
        with self._lock:
            self._entries = None

    def jira_entries(self) -> tuple[JiraEntry, ...]:
        """Every Jira entry of the document (what `make resync` reserves a commit's message read for)."""
        with self._lock:
            self.load()
            return self._jira

    def jira_entries_for(self, repository: Repository) -> tuple[JiraEntry, ...]:
        """The Jira entries told of the repository's builds, for the project the current event speaks for."""
        project = current_project()
        with self._lock:
            self.load()
            return tuple(e for e in self._jira if e.serves(repository, project))

    def entry_for(self, repository: Repository) -> Credential | None:
        """The first entry that serves the repository, for the project the current event speaks for; reads the
        document on first use."""
        project = current_project()
        with self._lock:
            entries = self.load()
            if (repository, project) not in self._served:
                if len(self._served) >= self.SERVED_MEMORY:
                    self._served.clear()
                entry = next((e for e in entries if e.serves(repository, project)), None)
                self._served[(repository, project)] = entry
            return self._served[(repository, project)]

    def sign(self, repository: Repository, refused: str | None = None) -> tuple[Credential, str]:
        """The entry serving the repository and its Authorization header. With `refused`, the header
        Bitbucket answered 401 to: the document is read again, unless another thread already did."""
        with self._lock:
            if refused is not None and refused in (self._cached_header(repository), *self._token_headers()):
                self._entries = None
                self._tokens = {k: v for k, v in self._tokens.items() if v[0] != refused}
            try:
                return self._sign(repository)
            except ConsumerRefused:  # the consumer's secret may have been rotated since it was read
                self._entries = None
                return self._sign(repository)

    def _sign(self, repository: Repository) -> tuple[Credential, str]:
        entry = self.entry_for(repository)
        if entry is None:
            raise NotServed(f"no entry of the credentials serves {repository.shown()} any more, so nothing is sent")
        if entry.scheme != CONSUMER:
            return entry, entry.authorization()
        token = self._tokens.get(entry.secret)
        if token is None or time.monotonic() >= token[1]:
            token = self._tokens[entry.secret] = self._exchange(entry)
        return entry, token[0]

    def _cached_header(self, repository: Repository) -> str | None:
        entry = self.entry_for(repository) if self._entries is not None else None
        return entry.authorization() if entry else None

    def _token_headers(self) -> list[str]:
        return [header for header, _ in self._tokens.values()]

    def secret_values(self) -> list[str]:
        """Every credential this instance holds, as text may show it: tokens, passwords, a consumer's secret and
        its OAuth tokens, and each Basic credential as sent (masked in a log line before it leaves)."""
        with self._lock:
            values = [header.partition(" ")[2] for header in self._token_headers()]
            values += [entry.secret for entry in self._jira]
            for entry in self._entries or ():
                values.append(entry.secret)
                if entry.scheme != "Bearer":
                    values.append(base64.b64decode(entry.secret).decode("utf-8", "replace").partition(":")[2])
            return values

    def _exchange(self, consumer: Credential) -> tuple[str, float]:
        """The client-credentials grant: one token serves every event until it nearly expires."""
        response = send(
            self.session,
            "POST",
            self.token_url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": consumer.authorization()},
            timeout=self.timeout,
        )
        body = json_body(response)
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if response.status_code != 200 or not _all_text(token):
            reason = as_text(body.get("error_description")) or as_text(body.get("error")) or response.reason
            refused = ConsumerRefused if response.status_code in (400, 401) else TransientError
            raise refused(
                f"Bitbucket refused the OAuth consumer of credential entry {consumer.position}: "
                f"{response.status_code} {clip(reason)}"
            )
        seconds = token_lifetime(lifetime)
        return f"Bearer {token}", time.monotonic() + seconds - min(60.0, seconds / 2)
