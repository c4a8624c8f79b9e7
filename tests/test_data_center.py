"""Bitbucket Data Center: builds of a self-hosted server, found three ways, posted to the Data Center
stand-in (validated against Atlassian's 9.2 description, over TLS from a private CA, under a context
path) beside the Bitbucket Cloud stand-in, with one document of credentials for both."""

from __future__ import annotations

import gc
import hashlib
import json
import tempfile
from datetime import UTC, datetime, timedelta

import pytest

import relay.config
import relay.errors
import relay.translate
import relay.warm
from standins.bitbucket import Bitbucket
from standins.builds import COMMIT, build
from standins.datacenter import DataCenter
from standins.tls import certificate_authority, signed_by
from tests.conftest import DC_TOKEN, TOKEN, dc_build, deliver, document, log_lines, remember_stored

PERSONAL_TOKEN = "personal-access-token-sLL5vlQxdtc-TnOwaUbC2PuF"  # ci-bot's (Basic)
ROTATED_DC_TOKEN = "dc-http-access-token-Jbjy52TWDCn7rqVRI1I3XKfJ"  # DC_TOKEN's successor
OTHER_SERVER_TOKEN = "dc-b-http-access-token-C74s5uynrDKe5KuXeTYMQc1A"  # a second server's

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
    assert [(c.method, c.status) for c in both.app.status_calls()] == [
        ("GET", 404),
        ("POST", 204),
        ("POST", 204),
        ("POST", 204),
    ]


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
    cloud_key = relay.translate.translate(
        build("SUCCESS", trigger_id=None, trigger_name=name), relay.config.Config()
    ).status.key
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


# --- credentials and TLS ------------------------------------------------------------------


def test_each_token_reaches_only_its_own_site(both, bitbucket):
    deliver(dc_build("SUCCESS", both))
    deliver(build("SUCCESS"))
    assert both.shown()
    assert bitbucket.app.shown("acme", "webapp", COMMIT)
    assert all(DC_TOKEN not in header for header in bitbucket.app.authorizations)
    assert all(TOKEN not in header for header in both.app.authorizations)
    assert set(both.app.authorizations) == {f"Bearer {DC_TOKEN}"}


def test_a_username_and_personal_token_sign_in_to_the_server_with_basic(bitbucket, server, monkeypatch):
    server.app.accept_basic("ci-bot", PERSONAL_TOKEN)
    credentials = document(server, token=None, username="ci-bot", password=PERSONAL_TOKEN)
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
    with pytest.raises(relay.errors.UntrustedCertificate):
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
        with pytest.raises(relay.errors.UntrustedCertificate):
            deliver(build("SUCCESS"))
        deliver(dc_build("SUCCESS", both))
    finally:
        running.stop()
    assert cloud.calls == []
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]


def test_a_retry_after_from_the_server_is_honoured(both, monkeypatch):
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "2")
    both.app.retry_after = 1
    both.app.fail_next("429")
    deliver(dc_build("SUCCESS", both))
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]
    assert [c.status for c in both.app.status_calls()] == [429, 404, 204]  # the read waited for, then the write


def test_a_rotated_server_token_is_read_again_on_a_401(both, monkeypatch):
    deliver(dc_build("WORKING", both))
    both.app.tokens.clear()
    both.app.accept_token(ROTATED_DC_TOKEN)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document(both, token=ROTATED_DC_TOKEN)))
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


# --- what the never-backwards read sees on a server -------------------------------------------------


def test_a_repository_the_server_does_not_know_is_logged_with_its_words_and_acknowledged(both, capsys):
    both.app.repositories = {"PROJ/other"}
    deliver(dc_build("SUCCESS", both))  # acknowledged: no raise
    [line] = log_lines(capsys.readouterr().out)
    assert (line["severity"], "@type" in line) == ("WARNING", False)  # the build's to mend: no page
    assert line["message"] == (
        "Bitbucket refused the status: Bitbucket answered 404: Repository repo of project PROJ does not exist."
    )
    assert both.shown() == []


def test_a_late_working_message_on_a_new_instance_leaves_a_cancelled_build_cancelled(both, new_instance):
    deliver(dc_build("CANCELLED", both))
    new_instance()
    deliver(dc_build("WORKING", both))
    assert [s["state"] for s in both.shown()] == ["CANCELLED"]
    assert [(c.method, c.status) for c in both.app.status_calls()] == [("GET", 404), ("POST", 204), ("GET", 200)]


def test_the_read_asks_for_the_servers_own_key_which_a_long_trigger_name_makes_unlike_clouds(both, new_instance):
    name = "nightly-integration-tests-for-the-payments-service-and-its-many-friends"  # > 40: hashed on Cloud
    deliver(dc_build("SUCCESS", both, trigger_id=None, trigger_name=name))
    new_instance()
    deliver(dc_build("WORKING", both, trigger_id=None, trigger_name=name))
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]
    reads = [c for c in both.app.calls if c.method == "GET"]
    assert [c.status for c in reads] == [404, 200]  # the new instance's read found the result
    assert all(c.raw_uri.endswith(f"?key={name}") for c in reads)


def test_an_older_runs_late_message_does_not_replace_what_the_server_wrote_after_it_was_published(both, new_instance):
    published = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()  # before the newer run's status is written
    deliver(dc_build("SUCCESS", both, "b-newer"))
    new_instance()
    deliver(dc_build("WORKING", both, "b-older"), published)
    [status] = both.shown()
    assert (status["state"], status["url"]) == ("SUCCESSFUL", dc_build("SUCCESS", both, "b-newer")["logUrl"])


# --- one server's CA is that server's only --------------------------------------------------------


def test_a_ca_given_for_one_server_is_not_used_for_another(bitbucket, server, monkeypatch, tmp_path):
    """Server A's entry carries its CA; server B's CA is the system's (REQUESTS_CA_BUNDLE). Events for A
    first, then B: B is verified against the system's CAs, not A's."""
    other_ca = certificate_authority("Acme Other CA")
    (tmp_path / "b").mkdir()
    other = DataCenter()
    other.accept_token(OTHER_SERVER_TOKEN)
    running = other.serve(ssl_context=signed_by(other_ca, tmp_path / "b"))
    system_cas = tmp_path / "system-cas.pem"
    system_cas.write_text(other_ca[0])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(system_cas))
    credentials = [*document(server), {"server": DataCenter.url(running), "token": OTHER_SERVER_TOKEN}]
    remember_stored(credentials)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(credentials))
    try:
        deliver(dc_build("SUCCESS", server))
        deliver(dc_build("SUCCESS", server, "b-2", url=f"{DataCenter.url(running)}/scm/proj/repo.git"))
    finally:
        running.stop()
    assert [s["state"] for s in server.shown()] == ["SUCCESSFUL"]
    assert [s["state"] for s in other.shown("PROJ", "repo", COMMIT)] == ["SUCCESSFUL"]


def test_a_newer_build_on_one_server_never_hides_an_older_builds_status_on_another(server, monkeypatch, tmp_path):
    """Two servers, a repository of one name on each, one commit, one trigger: each status is its server's own, so
    the newer build on server A is no reason to leave server B's build unposted."""
    other_ca = certificate_authority("Acme Other CA")
    (tmp_path / "b").mkdir()
    other = DataCenter()
    other.accept_token(OTHER_SERVER_TOKEN)
    running = other.serve(ssl_context=signed_by(other_ca, tmp_path / "b"))
    entry = {"server": DataCenter.url(running), "token": OTHER_SERVER_TOKEN, "ca_certificate": other_ca[0]}
    credentials = [*document(server), entry]
    remember_stored(credentials)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(credentials))
    try:
        deliver(dc_build("SUCCESS", server, "b-newer", createTime="2026-11-27T09:10:00Z"))
        on_b = f"{DataCenter.url(running)}/scm/proj/repo.git"
        deliver(dc_build("FAILURE", server, "b-older", url=on_b, createTime="2026-11-27T09:00:00Z"))
    finally:
        running.stop()
    assert [s["state"] for s in server.shown()] == ["SUCCESSFUL"]
    assert [s["state"] for s in other.shown("PROJ", "repo", COMMIT)] == ["FAILED"]


# --- a key never changes a path -------------------------------------------------------------------------


@pytest.mark.parametrize("key", [".", ".."])
def test_a_key_of_dots_is_the_same_hash_on_a_server(both, key):
    for status in ("WORKING", "SUCCESS"):
        b = dc_build(status, both)
        b["substitutions"]["_BITBUCKET_KEY"] = key
        deliver(b)
    hashed = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
    assert [(s["key"], s["state"]) for s in both.shown()] == [(hashed, "SUCCESSFUL")]
    reads = [call.raw_uri for call in both.app.status_calls() if call.method == "GET"]
    assert reads
    assert all(uri.endswith(f"/builds?key={hashed}") for uri in reads)


# --- a private CA leaves nothing behind ----------------------------------------------------------------


def test_an_instance_that_trusted_a_servers_ca_leaves_no_file_in_the_temporary_folder(both, monkeypatch, tmp_path):
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    deliver(dc_build("SUCCESS", both))
    assert [s["state"] for s in both.shown()] == ["SUCCESSFUL"]
    assert len(list(folder.iterdir())) == 1  # the CA's file, while the instance that verifies with it lives
    relay.warm.instance = None  # the instance is gone (not monkeypatch: it would keep the instance to put it back)
    gc.collect()
    assert list(folder.iterdir()) == []
