"""Bitbucket Data Center: builds of a self-hosted server, found three ways, posted to the Data Center
stand-in (validated against Atlassian's 9.2 description, over TLS from a private CA, under a context
path) beside the Bitbucket Cloud stand-in, with one document of credentials for both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import main
from standins.bitbucket import Bitbucket
from standins.builds import COMMIT, build, connected_repository
from standins.datacenter import DataCenter
from standins.tls import certificate_authority, signed_by
from tests.conftest import TOKEN, deliver, log_lines, remember_stored

DC_TOKEN = "dc-http-access-token-51ab"


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


# --- what a server shows ----------------------------------------------------------------


def test_a_lifecycle_with_a_late_working_message_ends_successful_with_ref_url_parent_and_duration(both):
    for status in ("QUEUED", "WORKING", "SUCCESS", "WORKING"):
        deliver(dc_build(status, both))
    assert both.states() == [("INPROGRESS", "Queued"), ("INPROGRESS", "Running"), ("SUCCESSFUL", "Succeeded in 3m 12s")]
    [status] = both.shown()
    b = dc_build("SUCCESS", both)
    assert status["ref"] == "refs/heads/feature/fish"
    assert status["url"] == b["logUrl"]
    assert (status["name"], status["parent"]) == ("webapp-pr", "webapp-pr")
    assert status["duration"] == 192_050  # 09:00:05.250 to 09:03:17.300, in milliseconds
    assert status["key"] == b["buildTriggerId"]


def test_a_cancelled_build_shows_cancelled_and_the_in_progress_states_carry_no_duration(both):
    deliver(dc_build("WORKING", both))
    assert "duration" not in both.shown()[0]
    deliver(dc_build("CANCELLED", both))
    assert [s["state"] for s in both.shown()] == ["CANCELLED"]


def test_a_normal_lifecycle_takes_four_calls_and_duplicates_none_more(both):
    for status in ("QUEUED", "QUEUED", "WORKING", "WORKING", "SUCCESS", "SUCCESS"):
        deliver(dc_build(status, both))
    assert [(c.method, c.status) for c in both.app.calls] == [("GET", 404), ("POST", 204), ("POST", 204), ("POST", 204)]


def test_a_late_message_on_a_new_instance_reads_the_server_and_never_goes_backwards(both, new_instance):
    deliver(dc_build("FAILURE", both))
    new_instance()  # the late messages reach another instance
    deliver(dc_build("QUEUED", both))
    deliver(dc_build("WORKING", both))
    assert [s["state"] for s in both.shown()] == ["FAILED"]
    assert both.app.went_backwards() == []


def test_a_tag_build_has_a_tag_ref_and_a_build_without_branch_or_tag_none(both):
    tagged = dc_build("SUCCESS", both, branch=None)
    tagged["substitutions"]["TAG_NAME"] = "v1.2.0"
    deliver(tagged)
    assert both.shown()[0]["ref"] == "refs/tags/v1.2.0"
    deliver(dc_build("SUCCESS", both, "b-2", branch=None, commit="a" * 40))
    assert "ref" not in both.shown(commit="a" * 40)[0]


def test_the_parent_is_the_key_when_the_trigger_has_no_name(both):
    deliver(dc_build("SUCCESS", both, trigger_name=None))
    [status] = both.shown()
    assert status["parent"] == status["key"] == dc_build("SUCCESS", both)["buildTriggerId"]


def test_a_long_trigger_name_is_a_key_of_up_to_255_characters_on_a_server_and_hashed_on_cloud(both):
    name = "nightly-integration-tests-for-the-payments-service-and-its-many-friends"
    deliver(dc_build("SUCCESS", both, trigger_id=None, trigger_name=name))
    deliver(build("SUCCESS", trigger_id=None, trigger_name=name))
    assert both.shown()[0]["key"] == name
    cloud_key = main.translate(build("SUCCESS", trigger_id=None, trigger_name=name), main.Config()).status.key
    assert len(cloud_key) == 40
    assert cloud_key != name


# --- three ways in ------------------------------------------------------------------------


def test_an_ssh_clone_url_reaches_the_server_whose_host_it_names_with_the_project_key_in_upper_case(both):
    deliver(dc_build("SUCCESS", both, url="ssh://git@127.0.0.1:7999/proj/repo.git"))
    assert [s["state"] for s in both.shown("PROJ/repo")] == ["SUCCESSFUL"]


def test_a_personal_repository_keeps_its_tilde_project(both):
    deliver(dc_build("SUCCESS", both, url=f"{both.url}/scm/~jdoe/scratch.git"))
    assert [s["state"] for s in both.shown("~jdoe/scratch")] == ["SUCCESSFUL"]


def test_substitutions_name_the_server_and_the_repository(both):
    b = build("SUCCESS", source="webhook", repo="PROJ/repo")
    b["substitutions"]["_BITBUCKET_SERVER"] = both.url + "/"
    deliver(b)
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]


def test_a_server_no_entry_names_is_skipped_with_one_line(both, capsys):
    b = build("SUCCESS", source="webhook", repo="PROJ/repo")
    b["substitutions"]["_BITBUCKET_SERVER"] = "https://bitbucket.elsewhere.example"
    deliver(b)
    deliver(dc_build("SUCCESS", both, url="https://git.elsewhere.example/scm/proj/repo.git"))
    lines = log_lines(capsys.readouterr().out)
    assert [line["message"] for line in lines] == [
        "Skipped: no entry of the credentials serves repository https://bitbucket.elsewhere.example PROJ/repo, "
        "so nothing is sent",
        "Skipped: no entry of the credentials serves repository https://git.elsewhere.example PROJ/repo, "
        "so nothing is sent",
    ]
    assert both.app.calls == []


def test_connected_repositories_land_on_their_site_with_one_lookup_per_repository(both, bitbucket, google):
    google.app.repositories[connected_repository("PROJ/repo")] = f"{both.url}/scm/proj/repo.git"
    lookups = google.app.counts["cloudbuild.repositories.get"]
    for n, status in enumerate(("QUEUED", "WORKING", "SUCCESS") * 2):
        commit = f"{n // 3:040x}"
        deliver(build(status, f"dc-{n // 3}", source="connection", repo="PROJ/repo", commit=commit))
        deliver(build(status, f"cloud-{n // 3}", source="connection", repo="acme/webapp", commit=commit))
    assert google.app.counts["cloudbuild.repositories.get"] - lookups == 2
    for n in range(2):
        assert [s["state"] for s in both.shown(commit=f"{n:040x}")] == ["SUCCESSFUL"]
        assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", f"{n:040x}")] == ["SUCCESSFUL"]


def test_a_connected_repository_elsewhere_is_skipped_with_its_remote_uri(both, google, capsys):
    google.app.repositories[connected_repository("acme/site")] = "https://github.com/acme/site.git"
    deliver(build("SUCCESS", source="connection", repo="acme/site"))
    [line] = log_lines(capsys.readouterr().out)
    assert (
        line["message"]
        == "Skipped: the build's connected repository 'https://github.com/acme/site.git' is not on Bitbucket"
    )


def test_without_permission_to_ask_cloud_build_repo_full_name_is_taken_for_bitbucket_cloud_with_one_warning(
    both, bitbucket, google, capsys
):
    google.app.forbidden = True
    for n in range(3):
        deliver(build("SUCCESS", f"b-{n}", source="connection", repo="acme/webapp", commit=f"{n:040x}"))
    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert len(warnings) == 1
    assert "answered 403" in warnings[0]["message"]
    assert "cloudbuild.repositories.get" in warnings[0]["message"]
    assert all(bitbucket.app.shown("acme", "webapp", f"{n:040x}") for n in range(3))


def test_a_transient_cloud_build_api_failure_is_redelivered(both, google, monkeypatch):
    monkeypatch.setenv("CLOUD_BUILD_API_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: connection refused
    with pytest.raises(main.TransientError):
        deliver(build("SUCCESS", source="connection", repo="acme/webapp"))


# --- credentials and TLS ------------------------------------------------------------------


def test_each_token_reaches_only_its_own_site(both, bitbucket):
    deliver(dc_build("SUCCESS", both))
    deliver(build("SUCCESS"))
    assert both.shown()
    assert bitbucket.app.shown("acme", "webapp", COMMIT)
    assert all(DC_TOKEN not in header for header in bitbucket.app.authorizations)
    assert all(TOKEN not in header for header in both.app.authorizations)
    assert both.app.authorizations == [f"Bearer {DC_TOKEN}"]


def test_a_username_and_personal_token_sign_in_to_the_server_with_basic(bitbucket, server, monkeypatch):
    server.app.accept_basic("ci-bot", "personal-access-token-77")
    credentials = document(server, token=None, username="ci-bot", password="personal-access-token-77")
    remember_stored(credentials)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(credentials))
    deliver(dc_build("SUCCESS", server))
    assert [s["state"] for s in server.shown()] == ["SUCCESSFUL"]


@pytest.mark.parametrize("ca", ["missing", "another CA's"])
def test_a_server_whose_ca_is_not_configured_receives_nothing_and_the_event_waits(
    bitbucket, server, monkeypatch, capsys, tmp_path, ca
):
    pem = None if ca == "missing" else certificate_authority("Some Other CA")[0]
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document(server, ca_certificate=pem)))
    remember_stored(document(server))
    with pytest.raises(main.UntrustedCertificate):
        deliver(dc_build("SUCCESS", server))
    assert server.app.calls == []
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "ERROR"
    assert f"https://127.0.0.1:{server.port} is not trusted" in line["message"]
    assert '"ca_certificate"' in line["message"]


def test_the_servers_ca_is_trusted_for_that_server_only(both, private_ca, monkeypatch, tmp_path):
    """A Bitbucket Cloud API served with a certificate of the same private CA is not trusted."""
    cloud = Bitbucket()
    cloud.accept_token(TOKEN)
    running = cloud.serve(ssl_context=signed_by(private_ca, tmp_path))
    monkeypatch.setenv("BITBUCKET_API_URL", running.api_url)
    try:
        with pytest.raises(main.UntrustedCertificate):
            deliver(build("SUCCESS"))
        deliver(dc_build("SUCCESS", both))
    finally:
        running.stop()
    assert cloud.calls == []
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"client_id": "c", "client_secret": "s", "server": "https://bb.example"}, "is an OAuth consumer"),
        ({"token": "t-123", "server": "http://bb.example"}, '"server" that is not an https:// URL'),
        ({"token": "t-123", "server": "https://user@bb.example"}, '"server" that is not an https:// URL'),
        ({"token": "t-123", "ca_certificate": "x"}, '"ca_certificate" but no "server"'),
        ({"token": "t-123", "server": "https://bb.example", "ca_certificate": "not a PEM"}, "not a PEM certificate"),
    ],
)
def test_a_bad_server_entry_is_a_configuration_error(bitbucket, monkeypatch, entry, message):
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps([{"token": TOKEN}, entry]))
    with pytest.raises(main.ConfigurationError, match="entry 2 of BITBUCKET_CREDENTIALS"):
        deliver(build("SUCCESS"))
    with pytest.raises(main.ConfigurationError, match=message):
        main.parse_credentials(json.dumps([entry]), "x")


def test_a_retry_after_from_the_server_is_honoured(both, monkeypatch):
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "2")
    both.app.retry_after = 1
    both.app.fail_next("429")
    deliver(dc_build("SUCCESS", both))
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]
    assert [c.status for c in both.app.calls] == [429, 204]


def test_a_rotated_server_token_is_read_again_on_a_401(both, monkeypatch):
    deliver(dc_build("WORKING", both))
    both.app.tokens.clear()
    both.app.accept_token("dc-http-access-token-rotated")
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document(both, token="dc-http-access-token-rotated")))
    deliver(dc_build("SUCCESS", both))
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]


# --- hostile names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "repo",
    [
        "PROJ/../admin",
        "../x/repo",
        "PROJ/re po",
        "PROJ/repo%2F..",
        "PR~OJ/repo",
        "PROJ/repo?x=1",
        "PROJ/ｒepo",
        "1PROJ/repo",
    ],
)
def test_a_hostile_project_or_slug_sends_nothing(both, repo):
    b = build("SUCCESS", source="webhook", repo=repo)
    b["substitutions"]["_BITBUCKET_SERVER"] = both.url
    deliver(b)
    assert both.app.calls == []
