"""The credentials document: what it may hold, the errors it gets (naming where, never a value), and which
entry serves which repository: parsed alone, and through the function and the Bitbucket stand-in (which
knows which repositories each access token reaches)."""

from __future__ import annotations

import fnmatch
import json

import pytest

import relay.credentials
import relay.errors
import relay.repository
from standins.bitbucket import token_identity
from standins.builds import build
from tests.conftest import API, JIRA_CLIENT_SECRET, TOKEN, WEBAPP, creator, deliver, log_lines, shown

COMMIT = "c" * 40
CATCH_ALL = "catch-all-token-RC1fGSB7yMgVshb5vrISN-zf"
FIRST = "first-token-hmX_bP-y5FeQ-owYfSYLkS1u"
SECOND = "second-token-wKpnyFaor2PW2-zLEYrN7C9d"
PASTED = "pasted-token-Jqm2IFoy7HLnlRNtlu8nhuxy"  # followed by a character outside ASCII
TEAM = "team-token-dyJuX63_m1geUNk6WL764xrF"  # and a number
PEM_MARKERS_ONLY = "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"  # a pasted stub


def test_each_repository_is_written_with_the_entry_that_serves_it_and_an_unserved_one_gets_nothing(
    three_entries, capsys
):
    for repo in ("acme/webapp", "acme/api", "tools/ci", "ops/deploy", "other/thing"):
        deliver(build("SUCCESS", f"b-{repo}", repo=repo, commit=COMMIT))
    assert creator(three_entries, "acme/webapp") == token_identity(WEBAPP)
    assert creator(three_entries, "acme/api") == token_identity(API)
    assert creator(three_entries, "tools/ci") == token_identity(API)
    assert creator(three_entries, "ops/deploy") == "user:ci@acme.example"  # patterns ignore case
    assert three_entries.app.shown("other", "thing", COMMIT) == []
    assert not [c for c in three_entries.app.calls if "/other/" in c.path]
    lines = log_lines(capsys.readouterr().out)
    assert [line["credential"] for line in lines[:4]] == [1, 2, 2, 3]
    assert lines[4]["severity"] == "INFO"
    assert lines[4]["message"] == (
        "Skipped: no entry of the credentials serves repository other/thing, so nothing is sent"
    )


def test_the_first_entry_that_matches_wins_and_an_entry_without_patterns_serves_the_rest(bitbucket, monkeypatch):
    bitbucket.app.accept_token(CATCH_ALL)
    document = [{"token": WEBAPP, "repositories": ["acme/webapp"]}, {"token": CATCH_ALL}]
    bitbucket.app.accept_token(WEBAPP, {"acme/webapp"})
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    deliver(build("SUCCESS", repo="acme/webapp", commit=COMMIT))
    deliver(build("SUCCESS", repo="acme/anything", commit=COMMIT))
    assert creator(bitbucket, "acme/webapp") == token_identity(WEBAPP)
    assert creator(bitbucket, "acme/anything") == token_identity(CATCH_ALL)


IN = "of BITBUCKET_CREDENTIALS"
BAD_DOCUMENTS = [
    ([{"token": FIRST}, {"tokn": SECOND}], f"entry 2 {IN} has an unknown field: 'tokn'"),
    ([{"token": FIRST, "repository": ["acme/*"]}], f"entry 1 {IN} has an unknown field: 'repository'"),
    ([{"token": FIRST}, {"token": SECOND, "ATATT3x-SECRET": 1}], f"entry 2 {IN} has an unknown field: (a field that"),
    ([{"token": FIRST}, SECOND], f"entry 2 {IN} is not a JSON object"),
    ([{"token": FIRST, "username": "u", "password": "p"}], f"entry 1 {IN} does not hold Bitbucket credentials"),
    ([{"token": FIRST, "repositories": "acme/*"}], f'entry 1 {IN} has "repositories" that are not'),
    ([{"token": FIRST, "repositories": ["acme"]}], f'entry 1 {IN} has "repositories" that are not'),
    (
        [],
        'BITBUCKET_CREDENTIALS does not hold Bitbucket credentials: expected JSON {"username": ..., "password": ...}, '
        '{"token": ...} or {"client_id": ..., "client_secret": ...}, or a non-empty array of such objects',
    ),
    ([{"token": FIRST, "tokn": 1, "repo": 2}], f"entry 1 {IN} has an unknown field: 'repo', 'tokn'"),
    ([{"token": None, "server": None}], f"entry 1 {IN} has a null 'server', 'token': leave a field out instead"),
    ([{"username": "ci:bot", "password": "pw"}], f"entry 1 {IN} holds a username with a ':', which HTTP Basic cannot"),
    ([{"client_id": "c:1", "client_secret": "s"}], f"entry 1 {IN} holds a client_id with a ':', which HTTP Basic"),
    ([{"token": FIRST, "projects": ["Not An ID"]}], f'entry 1 {IN} has "projects" that are not a list of project ID'),
    ([{"token": FIRST, "server": 5}], f'entry 1 {IN} has a "server" that is not an https:// URL'),
    ([{"token": FIRST, "repositories": []}], f'entry 1 {IN} has "repositories" that are not'),
    ([{"token": FIRST, "server": None}], f"entry 1 {IN} has a null 'server'"),
    ([{"token": FIRST, "repositories": None}], f"entry 1 {IN} has a null 'repositories'"),
    ([{"token": None}], f"entry 1 {IN} has a null 'token'"),
    ([{"token": FIRST, "server": "https://bb.example", "ca_certificate": None}], f"entry 1 {IN} has a null"),
]


@pytest.mark.parametrize(("document", "message"), BAD_DOCUMENTS)
def test_a_bad_document_is_a_configuration_error_naming_the_source_and_position_never_a_value(
    bitbucket, monkeypatch, capsys, document, message
):
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    with pytest.raises(relay.errors.ConfigurationError) as raised:
        deliver(build("SUCCESS"))
    assert message in str(raised.value)
    out = capsys.readouterr().out
    for value in (FIRST, SECOND, "ATATT3x", "acme/*"):
        assert value not in str(raised.value)
        assert value not in out
    assert bitbucket.app.calls == []


@pytest.mark.parametrize(
    "value",
    ["not json {", '["token"]', '{"user": "x"}', '{"token": ""}', '{"username": "a:b", "password": "p"}', ""],
)
def test_malformed_credentials_are_a_configuration_error_naming_the_variable_not_the_value(
    bitbucket, monkeypatch, capsys, value
):
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", value or " ")
    with pytest.raises(relay.errors.ConfigurationError) as raised:
        deliver(build("SUCCESS"))
    assert "BITBUCKET_CREDENTIALS" in str(raised.value)
    out = capsys.readouterr().out
    for secret_part in ("a:b", '"user"', "not json"):
        assert secret_part not in str(raised.value)
        assert secret_part not in out
    assert log_lines(out)[-1]["severity"] == "ERROR"
    assert bitbucket.app.calls == []


def test_credentials_never_show_in_their_repr():
    [credentials] = relay.credentials.parse_credentials(json.dumps({"token": TOKEN}), "test")
    assert TOKEN not in repr(credentials)
    assert TOKEN not in str(credentials)


def test_a_token_with_a_character_outside_ascii_is_a_configuration_error_naming_the_source(
    bitbucket, monkeypatch, capsys
):
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": f"{PASTED}…"}))
    with pytest.raises(
        relay.errors.ConfigurationError, match="BITBUCKET_CREDENTIALS holds a token with a character outside"
    ):
        deliver(build("SUCCESS"))
    out = capsys.readouterr().out
    assert log_lines(out)[-1]["severity"] == "ERROR"
    assert "BITBUCKET_CREDENTIALS" in log_lines(out)[-1]["message"]
    assert PASTED not in out
    assert bitbucket.app.calls == []


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"client_id": "c", "client_secret": "s", "server": "https://bb.example"}, "is an OAuth consumer"),
        ({"token": FIRST, "server": "http://bb.example"}, '"server" that is not an https:// URL'),
        ({"token": FIRST, "server": "https://user@bb.example"}, '"server" that is not an https:// URL'),
        ({"token": FIRST, "ca_certificate": "x"}, '"ca_certificate" but no "server"'),
        ({"token": FIRST, "server": "https://bb.example", "ca_certificate": "not a PEM"}, "not a PEM certificate"),
        ({"token": FIRST, "server": "https://bb.example", "ca_certificate": 5}, "not a PEM certificate"),
        (
            {"token": FIRST, "server": "https://bb.example", "ca_certificate": PEM_MARKERS_ONLY},
            "not a PEM certificate",
        ),
    ],
)
def test_a_bad_server_entry_is_a_configuration_error(bitbucket, monkeypatch, entry, message):
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps([{"token": TOKEN}, entry]))
    with pytest.raises(relay.errors.ConfigurationError, match="entry 2 of BITBUCKET_CREDENTIALS"):
        deliver(build("SUCCESS"))
    with pytest.raises(relay.errors.ConfigurationError, match=message):
        relay.credentials.parse_credentials(json.dumps([entry]), "x")


def entries(*document: dict) -> tuple[relay.credentials.Credential, ...]:
    return relay.credentials.parse_credentials(json.dumps(list(document)), "test")


def test_an_ssh_clone_urls_repository_is_served_only_by_the_entry_of_its_servers_host():
    """An SSH clone URL names only a host: the entry whose server is on that host serves it, no other server's."""
    a, b = entries({"token": FIRST, "server": "https://a.example"}, {"token": SECOND, "server": "https://b.example"})
    on_b = relay.repository.Repository("PROJ", "repo", ssh_host="b.example")
    assert (a.serves(on_b), b.serves(on_b)) == (False, True)


def test_a_data_center_entrys_patterns_match_project_and_slug_without_case():
    [entry] = entries({"token": FIRST, "server": "https://bb.example", "repositories": ["proj/Repo-*"]})
    assert entry.serves(relay.repository.Repository("PROJ", "repo-api", server="https://bb.example"))
    assert not entry.serves(relay.repository.Repository("PROJ", "other", server="https://bb.example"))
    assert not entry.serves(relay.repository.Repository("PROJ", "repo-api"))  # the same name on Bitbucket Cloud


def test_a_server_written_with_its_default_port_serves_clone_urls_without_it():
    [entry] = entries({"token": FIRST, "server": "https://bb.example:443/bitbucket"})
    found = relay.repository.repository_at("https://bb.example/bitbucket/scm/proj/repo.git")
    assert entry.server == "https://bb.example/bitbucket"
    assert entry.serves(relay.repository.valid_repository(found))
    [other_port] = entries({"token": FIRST, "server": "https://bb.example:8443"})
    assert other_port.server == "https://bb.example:8443"


def test_a_large_document_is_matched_without_falling_off_a_cliff(bitbucket, monkeypatch):
    """5,000 entries of 20 patterns each (100,000 patterns, past fnmatch's cache of 32,768): each pattern is
    translated once, when the document is read, however many events look an entry up (before the patterns were
    compiled once, every lookup translated them all again: about 10 s an event; `make bench` times it)."""
    document = [
        {"token": f"{TEAM}-{n:04}", "repositories": [f"team{n}/service-{p}-*" for p in range(20)]} for n in range(5_000)
    ]
    for n in range(4_997, 5_000):
        bitbucket.app.accept_token(f"{TEAM}-{n:04}")
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    translated = []
    translate = fnmatch.translate
    monkeypatch.setattr(fnmatch, "translate", lambda pattern: translated.append(pattern) or translate(pattern))
    for n in range(4_997, 5_000):
        deliver(build("SUCCESS", f"b-{n}", repo=f"team{n}/service-19-api"))
        assert [s["state"] for s in shown(bitbucket, f"team{n}/service-19-api")] == ["SUCCESSFUL"]
    assert len(translated) == 100_000


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"jira": "http://acme.atlassian.net"}, '"jira" that is not an https:// URL'),
        ({"jira": "https://acme.atlassian.net", "client_secret": None}, 'without its "client_id" and "client_secret"'),
        ({"jira": "https://acme.atlassian.net", "client_id": None}, 'without its "client_id" and "client_secret"'),
        ({"jira": 5}, '"jira" that is not an https:// URL of a Jira site'),
        ({"jira": "https://acme.atlassian.net", "repositories": ["webapp"]}, '"repositories" that are not a list'),
        ({"jira": "https://acme.atlassian.net", "projects": ["Team A"]}, '"projects" that are not a list'),
        ({"jira": "https://acme.atlassian.net", "cloud_id": "../other"}, '"cloud_id" that is not a cloud id'),
        ({"jira": "https://acme.atlassian.net", "server": "http://bb.example"}, '"server" that is neither'),
        ({"jira": "https://acme.atlassian.net", "token": FIRST}, "a Jira entry with a field it cannot hold: 'token'"),
        ({"cloud_id": "abc-123", "token": FIRST}, 'has a "cloud_id" but no "jira"'),
    ],
)
def test_a_bad_jira_entry_is_a_configuration_error_naming_its_position_never_its_secret(entry, message):
    entry = {"client_id": "cloud-build", "client_secret": JIRA_CLIENT_SECRET, **entry}
    entry = {name: value for name, value in entry.items() if value is not None}
    with pytest.raises(relay.errors.ConfigurationError, match="entry 2 of test") as raised:
        relay.credentials.parse_credentials(json.dumps([{"token": TOKEN}, entry]), "test")
    assert message in str(raised.value)
    assert JIRA_CLIENT_SECRET not in str(raised.value)
