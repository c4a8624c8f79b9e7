from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings

import main
import relay.warm
from standins import LOGS, SEEN_SECRETS, builds, remember_basic, remember_secret
from standins.bitbucket import Bitbucket, Server
from standins.builds import COMMIT, build
from standins.datacenter import DataCenter
from standins.google import Google, GoogleServer, Storage
from standins.jira import Jira
from standins.tls import certificate_authority, signed_by

CONFIG_VARIABLES = (
    "BITBUCKET_API_URL",
    "BITBUCKET_CREDENTIALS",
    "BITBUCKET_CREDENTIALS_FILE",
    "BITBUCKET_REPOSITORIES",
    "BITBUCKET_OAUTH_TOKEN_URL",
    "CREDENTIALS_SECRET",
    "SECRETS_BUCKET",
    "SECRETS_OBJECT",
    "KMS_CRYPTO_KEY_ID",
    "KMS_API_ENDPOINT",
    "SECRET_MANAGER_API_ENDPOINT",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "MAX_EVENT_AGE_SECONDS",
    "CLOUD_BUILD_API_ENDPOINT",
    "RATE_LIMIT_COOLDOWN_SECONDS",
    "HTTP_RETRY_BACKOFF_SECONDS",
    "HTTP_TIMEOUT_SECONDS",
    "EVENT_DEADLINE_SECONDS",
    "LOGGING_API_ENDPOINT",
    "LOG_EXCERPTS",
    "LOG_EXCERPT_LINES",
    "LOG_VIEW",
    "LOG_WAIT_SECONDS",
    "JIRA_API_URL",
)
TOKEN = "bb-access-token-66AK1XTUzJVxvDEzXwW9p7-B"  # the stand-in's only accepted credential unless a test adds more
SECRET_FIELDS = ("password", "token", "client_secret")


def remember_stored(credentials: Any) -> None:
    """Every secret a test stores is one that must never be printed (one entry, or a list of them)."""
    if isinstance(credentials, list):
        for entry in credentials:
            remember_stored(entry)
        return
    remember_secret(*(credentials[name] for name in SECRET_FIELDS if name in credentials))
    if "password" in credentials:
        remember_basic(credentials.get("username", ""), credentials["password"])
    if "client_secret" in credentials:
        remember_basic(credentials.get("client_id", ""), credentials["client_secret"])


# --- hypothesis: the same examples on every run of `make test`; a new search on every run of `make fuzz` -------

# Both take Hypothesis' own CI settings (no deadline, no database, too_slow not a failure: nothing depends on the
# machine's speed or on an earlier run) but not its derandomize, which would ignore --hypothesis-seed.
settings.register_profile("ci", settings.get_profile("ci"), derandomize=False)
settings.register_profile("fuzz", settings.get_profile("ci"), derandomize=False)
settings.load_profile("ci")  # the default; --hypothesis-profile=fuzz (make fuzz) replaces it
CI_SEED = 0


@pytest.hookimpl(tryfirst=True)  # before Hypothesis' own plugin reads --hypothesis-seed
def pytest_configure(config: pytest.Config) -> None:
    """Every run has one seed, printed in the header: profile "ci" a fixed one (a correct main is green on every
    run), any other a new one each run. `--hypothesis-seed=N` repeats a run."""
    if config.getoption("hypothesis_seed", None) is None and hasattr(config.option, "hypothesis_seed"):
        profile = config.getoption("hypothesis_profile", None) or "ci"
        seed = getattr(config, "workerinput", {}).get("hypothesis_seed")  # a pytest-xdist worker: the controller's
        config.option.hypothesis_seed = seed or str(CI_SEED if profile == "ci" else random.randrange(2**32))


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's controller, as it starts a worker: the worker takes the controller's seed."""
    node.workerinput["hypothesis_seed"] = node.config.getoption("hypothesis_seed", None)


def pytest_report_header(config: pytest.Config) -> str:
    profile = config.getoption("hypothesis_profile", None) or "ci"
    return f"hypothesis: profile {profile!r}, --hypothesis-seed={config.getoption('hypothesis_seed', None)}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """A failed run says its seed again at the end (-q hides the header)."""
    if exitstatus != 0:
        terminalreporter.write_line(f"{pytest_report_header(config)} (the same option repeats this run)")


# --- no secret in any output of the whole session --------------------------------

_OUTPUTS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep everything a test wrote to stdout and stderr, and every failure text."""
    for name, text in report.sections:
        _OUTPUTS.append((f"{report.nodeid} ({name})", text))
    if report.failed:
        _OUTPUTS.append((f"{report.nodeid} (failure)", report.longreprtext))


_WORKERS_LEAKS: list[str] = []  # what each pytest-xdist worker found, gathered by the controller


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist's controller, as a worker ends: the secrets, the stand-ins and the processes live in the
    workers, so each worker checks its own outputs and sends what it found (workeroutput)."""
    _WORKERS_LEAKS.extend(getattr(node, "workeroutput", {}).get("secret_leaks", []))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if any credential used by any test appears in any output."""
    if session.config.getoption("capture") == "no":
        session.config.get_terminal_writer().line(
            "The secret guard cannot see output that is not captured (-s): run without -s", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    outputs = _OUTPUTS + [("functions-framework log", log) for log in LOGS]
    leaks = sorted({where for where, text in outputs for secret in SEEN_SECRETS if secret in text})
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller says it
        workeroutput["secret_leaks"] = leaks
        return
    leaks = sorted({*leaks, *_WORKERS_LEAKS})
    if leaks:
        session.config.get_terminal_writer().line(
            "A credential appeared in the output of: " + "; ".join(leaks), red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


KMS_KEY = "projects/local-project/locations/global/keyRings/bitbucket/cryptoKeys/build-status"


@pytest.fixture(autouse=True)
def fresh_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a new Cloud Functions instance with only the environment it sets."""
    for name in CONFIG_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_RETRY_BACKOFF_SECONDS", "0.01")
    monkeypatch.setenv("LOG_WAIT_SECONDS", "0")  # a test that waits for a late log says so
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # google-auth never looks for a metadata server (off loopback)
    monkeypatch.setattr(relay.warm, "instance", None)


@pytest.fixture
def new_instance(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it, and the next event reaches a new instance: cold, with no memory of earlier events."""

    def start() -> None:
        monkeypatch.setattr(relay.warm, "instance", None)

    return start


@pytest.fixture
def bitbucket(monkeypatch: pytest.MonkeyPatch, google: GoogleServer) -> Iterator[Server]:
    """The Bitbucket stand-in, with the function pointed at it and signed in with a token; Cloud Build's
    API (the Google stand-in) knows that the connected repository acme-webapp is acme/webapp."""
    app = Bitbucket()
    app.accept_token(TOKEN)
    server = app.serve()
    monkeypatch.setenv("BITBUCKET_API_URL", server.api_url)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": TOKEN}))
    monkeypatch.setenv("CLOUD_BUILD_API_ENDPOINT", google.endpoint)
    monkeypatch.setenv("LOGGING_API_ENDPOINT", google.endpoint)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google.sa_file))
    google.app.cloud_build_answer = None
    google.app.logging_answer = None
    google.app.log_entries.clear()
    google.app.log_filters.clear()
    google.app.log_views.clear()
    google.app.token_cycle = ()
    google.app.builds.clear()
    google.app.refuse_tokens = False
    google.app.secret_delay = 0.0
    google.app.repositories[builds.connected_repository("acme/webapp")] = "https://bitbucket.org/acme/webapp.git"
    yield server
    server.stop()


@pytest.fixture(scope="session")
def google(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GoogleServer]:
    server = Google().serve()
    server.sa_file = server.service_account_file(tmp_path_factory.mktemp("google"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def storage() -> Iterator[Storage]:
    emulator = Storage()
    yield emulator
    emulator.stop()


@pytest.fixture
def bucket_credentials(
    monkeypatch: pytest.MonkeyPatch, google: GoogleServer, storage: Storage, bitbucket: Server
) -> Any:
    """Credentials stored as the original function stored them: KMS-encrypted, in a bucket."""

    def store(credentials: dict[str, str], name: str = "bitbucket-credentials.json.enc") -> None:
        remember_stored(credentials)
        storage.put("acme-secrets", name, google.app.encrypt(KMS_KEY, json.dumps(credentials).encode()))
        monkeypatch.setenv("SECRETS_OBJECT", name)

    monkeypatch.delenv("BITBUCKET_CREDENTIALS")
    monkeypatch.setenv("SECRETS_BUCKET", "acme-secrets")
    monkeypatch.setenv("KMS_CRYPTO_KEY_ID", KMS_KEY)
    monkeypatch.setenv("KMS_API_ENDPOINT", google.endpoint)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage.host)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google.sa_file))
    store({"token": TOKEN})
    return store


@pytest.fixture
def secret_credentials(monkeypatch: pytest.MonkeyPatch, google: GoogleServer, bitbucket: Server) -> Any:
    """Credentials in Secret Manager; each call adds a version."""
    secret = f"projects/local-project/secrets/bitbucket-{len(google.app.secrets)}"

    def store(credentials: dict[str, str]) -> None:
        remember_stored(credentials)
        google.app.add_secret_version(secret, json.dumps(credentials).encode())

    monkeypatch.delenv("BITBUCKET_CREDENTIALS")
    monkeypatch.setenv("CREDENTIALS_SECRET", secret)
    monkeypatch.setenv("SECRET_MANAGER_API_ENDPOINT", google.endpoint)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(google.sa_file))
    store({"token": TOKEN})
    return store


@pytest.fixture
def environment_credentials(monkeypatch: pytest.MonkeyPatch, bitbucket: Server) -> Any:
    def store(credentials: dict[str, str]) -> None:
        remember_stored(credentials)
        monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(credentials))

    return store


@pytest.fixture
def file_credentials(monkeypatch: pytest.MonkeyPatch, bitbucket: Server, tmp_path: Any) -> Any:
    """Credentials in a file, as Cloud Run mounts a secret; each call rewrites it."""
    path = tmp_path / "secrets" / "bitbucket-credentials.json"
    path.parent.mkdir()

    def store(credentials: Any) -> None:
        if isinstance(credentials, (dict, list)):
            remember_stored(credentials)
            credentials = json.dumps(credentials)
        path.write_text(credentials)

    monkeypatch.delenv("BITBUCKET_CREDENTIALS")
    monkeypatch.setenv("BITBUCKET_CREDENTIALS_FILE", str(path))
    store({"token": TOKEN})
    store.path = path  # type: ignore[attr-defined]
    return store


@pytest.fixture(params=["file", "environment", "secret", "bucket"])
def credential_store(request: pytest.FixtureRequest) -> Any:
    """Each credential source in turn: a function that stores credentials JSON in it."""
    return request.getfixturevalue(f"{request.param}_credentials")


def log_lines(output: str) -> list[dict[str, Any]]:
    """The function's structured log lines; fails on any line that is not one."""
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def deliver(build: dict[str, Any], published: str | None = None) -> None:
    """Deliver one message as the 1st gen runtime does."""
    main.build_status(builds.background_event(build), builds.Context(published))


def shown(server: Server, repo: str = "acme/webapp", commit: str = builds.COMMIT) -> list[dict[str, Any]]:
    return server.app.shown(*repo.split("/"), commit)


# --- a Bitbucket Data Center server (over TLS from a private CA, under a context path) -------------

DC_TOKEN = "dc-http-access-token-rhUR72WR9InEj2VIeaN9jcRh"


@dataclass
class Site:
    app: DataCenter
    url: str  # https://127.0.0.1:PORT/bitbucket
    ca: str  # the PEM of the CA that signed its certificate
    port: int

    def shown(self, repo: str = "PROJ/repo", commit: str = COMMIT) -> list[dict[str, Any]]:
        return self.app.shown(*repo.split("/"), commit)

    def states(self) -> list[tuple[str, str]]:
        return [(s["state"], s["description"]) for _, s in self.app.history]


@pytest.fixture(scope="session")
def private_ca() -> Any:
    return certificate_authority("Acme Internal CA")


@pytest.fixture
def server(private_ca, tmp_path) -> Iterator[Site]:
    app = DataCenter()
    app.accept_token(DC_TOKEN)
    running = app.serve(ssl_context=signed_by(private_ca, tmp_path))
    yield Site(app, DataCenter.url(running), private_ca[0], running.port)
    running.stop()


def document(site: Site, **server_entry: Any) -> list[dict[str, Any]]:
    entry = {"server": site.url, "token": DC_TOKEN, "ca_certificate": site.ca, **server_entry}
    return [{"token": TOKEN}, {k: v for k, v in entry.items() if v is not None}]


@pytest.fixture
def both(bitbucket, server, monkeypatch) -> Site:
    """Bitbucket Cloud and a Data Center server, one entry each."""
    credentials = document(server)
    remember_stored(credentials)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(credentials))
    return server


def dc_build(status: str, site: Site, build_id: str = "b-0001", url: str | None = None, **kwargs: Any) -> dict:
    b = build(status, build_id, source="git", **kwargs)
    b["source"]["gitSource"]["url"] = url or f"{site.url}/scm/proj/repo.git"
    return b


# --- a document of three entries, each serving its own repositories -------------------------------

WEBAPP = "webapp-repository-token-4PLLnZVmMe206uj0bvPpes4z"
API = "api-and-tools-token-YW-SJpV2uFjR8NzURCyfAyJq"
TOOLS = "unused-token-vDLMxm-ZihPGTPhdY0COgpyC"
OPS = "ATATT3xb6vpKw_tRnzyTVcEQ8GhXaDn"  # the ops entry's API token (a Basic password)
DOCUMENT = [
    {"token": WEBAPP, "repositories": ["acme/webapp"]},
    {"token": API, "repositories": ["acme/api", "tools/*"]},
    {"username": "ci@acme.example", "password": OPS, "repositories": ["Ops/*"]},
]


@pytest.fixture
def three_entries(bitbucket, monkeypatch):
    bitbucket.app.revoke_all()
    bitbucket.app.accept_token(WEBAPP, {"acme/webapp"})
    bitbucket.app.accept_token(API, {"acme/api", "tools/ci"})
    bitbucket.app.accept_basic("ci@acme.example", OPS)
    for entry in DOCUMENT:
        remember_stored(entry)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(DOCUMENT))
    return bitbucket


def creator(server, repo: str, commit: str = "c" * 40) -> str:
    [status] = server.app.shown(*repo.split("/"), commit)
    return status["_creator"]


# --- Jira Software Cloud: Atlassian's API and one site, `acme` --------------------------------------

JIRA_CLIENT_ID = "cloud-build-relay-jira-client"  # OAuth credentials' client id: not a secret
JIRA_CLIENT_SECRET = "ATOA-AvNrHEx_METGuYV6oAY5g_A39FYG1QEn"
JIRA_ISSUES = ("ABC-123", "ABC-124")  # the issues the site knows


@dataclass
class JiraSite:
    """The Jira stand-in as the `jira` fixture serves it: one site, its issues, one OAuth client accepted."""

    app: Jira
    server: Server
    url: str  # the site: http://127.0.0.1:PORT/acme
    cloud_id: str
    monkeypatch: pytest.MonkeyPatch
    client_id: str = JIRA_CLIENT_ID
    client_secret: str = field(default=JIRA_CLIENT_SECRET, repr=False)  # a failed test's report shows no secret

    def entry(self, **fields: Any) -> dict[str, Any]:
        """The site's entry of the credentials document, with `fields` (repositories, projects, cloud_id ...)
        added or replaced; a field given None is left out."""
        entry = {"jira": self.url, "client_id": self.client_id, "client_secret": self.client_secret, **fields}
        return {name: value for name, value in entry.items() if value is not None}

    def add_entry(self, **fields: Any) -> dict[str, Any]:
        """Put entry(**fields) in BITBUCKET_CREDENTIALS, after the entries already there (those of the `bitbucket`
        or `both` fixture), its secret remembered; returns the entry."""
        entry = self.entry(**fields)
        remember_stored(entry)
        current = json.loads(os.environ.get("BITBUCKET_CREDENTIALS") or "[]")
        document = [*(current if isinstance(current, list) else [current]), entry]
        self.monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
        return entry

    def builds(self, issue_key: str) -> list[dict[str, Any]]:
        """What the issue shows of builds (the site's `builds_for`)."""
        return self.app.builds_for(self.cloud_id, issue_key)

    def deployments(self, issue_key: str) -> list[dict[str, Any]]:
        return self.app.deployments_for(self.cloud_id, issue_key)


@pytest.fixture
def jira(monkeypatch: pytest.MonkeyPatch) -> Iterator[JiraSite]:
    """The Jira stand-in with the function pointed at it (JIRA_API_URL): the site `acme`, knowing JIRA_ISSUES, and
    one OAuth client accepted with both permissions. The credentials document has no Jira entry until a test
    calls add_entry()."""
    app = Jira()
    server = app.serve()
    url, cloud_id = app.add_site("acme")
    app.add_issues(cloud_id, *JIRA_ISSUES)
    app.accept_client(JIRA_CLIENT_ID, JIRA_CLIENT_SECRET)
    monkeypatch.setenv("JIRA_API_URL", server.root)
    yield JiraSite(app, server, url, cloud_id, monkeypatch)
    server.stop()
