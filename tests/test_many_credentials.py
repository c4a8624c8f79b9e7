"""A credentials document that lists credentials, and each credential's hourly budget, through the
function and the Bitbucket stand-in (which knows which repositories each access token reaches)."""

from __future__ import annotations

import json

import pytest

import main
from standins.bitbucket import token_identity
from standins.builds import build
from tests.conftest import deliver, log_lines, remember_stored

COMMIT = "c" * 40
WEBAPP, API, TOOLS = "webapp-repository-token-1", "api-and-tools-token-2", "unused-token-3"
DOCUMENT = [
    {"token": WEBAPP, "repositories": ["acme/webapp"]},
    {"token": API, "repositories": ["acme/api", "tools/*"]},
    {"username": "ci@acme.example", "password": "ops-api-token-3", "repositories": ["Ops/*"]},
]


@pytest.fixture
def three_entries(bitbucket, monkeypatch):
    bitbucket.app.revoke_all()
    bitbucket.app.accept_token(WEBAPP, {"acme/webapp"})
    bitbucket.app.accept_token(API, {"acme/api", "tools/ci"})
    bitbucket.app.accept_basic("ci@acme.example", "ops-api-token-3")
    for entry in DOCUMENT:
        remember_stored(entry)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(DOCUMENT))
    return bitbucket


def creator(server, repo: str, commit: str = COMMIT) -> str:
    [status] = server.app.shown(*repo.split("/"), commit)
    return status["_creator"]


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
    bitbucket.app.accept_token("catch-all-token-99")
    document = [{"token": WEBAPP, "repositories": ["acme/webapp"]}, {"token": "catch-all-token-99"}]
    bitbucket.app.accept_token(WEBAPP, {"acme/webapp"})
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    deliver(build("SUCCESS", repo="acme/webapp", commit=COMMIT))
    deliver(build("SUCCESS", repo="acme/anything", commit=COMMIT))
    assert creator(bitbucket, "acme/webapp") == token_identity(WEBAPP)
    assert creator(bitbucket, "acme/anything") == token_identity("catch-all-token-99")


def test_rotating_one_entry_in_secret_manager_reaches_a_warm_instance_with_one_more_read(
    three_entries, secret_credentials, google
):
    secret_credentials(DOCUMENT)
    deliver(build("WORKING", "b-1", repo="ops/deploy", commit=COMMIT))
    deliver(build("WORKING", "b-2", repo="acme/webapp", commit=COMMIT))
    reads = google.app.counts["secretmanager.access"]
    # Entry 3's API token is rotated for the same account (which may overwrite its own statuses).
    three_entries.app.basic.pop("ci@acme.example")
    three_entries.app.accept_basic("ci@acme.example", "ops-api-token-3-rotated")
    secret_credentials([*DOCUMENT[:2], {**DOCUMENT[2], "password": "ops-api-token-3-rotated"}])
    deliver(build("SUCCESS", "b-1", repo="ops/deploy", commit=COMMIT))
    deliver(build("SUCCESS", "b-2", repo="acme/webapp", commit=COMMIT))
    assert google.app.counts["secretmanager.access"] - reads == 1
    assert [s["state"] for s in three_entries.app.shown("ops", "deploy", COMMIT)] == ["SUCCESSFUL"]
    assert [s["state"] for s in three_entries.app.shown("acme", "webapp", COMMIT)] == ["SUCCESSFUL"]


def test_one_oauth_token_per_consumer_entry(bitbucket, monkeypatch):
    bitbucket.app.accept_consumer("consumer-a", "consumer-a-secret")
    bitbucket.app.accept_consumer("consumer-b", "consumer-b-secret")
    monkeypatch.setenv("BITBUCKET_OAUTH_TOKEN_URL", bitbucket.token_url)
    document = [
        {"client_id": "consumer-a", "client_secret": "consumer-a-secret", "repositories": ["acme/*"]},
        {"client_id": "consumer-b", "client_secret": "consumer-b-secret", "repositories": ["tools/*"]},
    ]
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    for n in range(6):
        deliver(build("SUCCESS", f"b-{n}", repo="acme/webapp" if n % 2 else "tools/ci", commit=f"{n:040x}"))
    assert sum(1 for c in bitbucket.app.calls if c.path == "/site/oauth2/access_token") == 2
    assert creator(bitbucket, "acme/webapp", f"{1:040x}") == "consumer:consumer-a"
    assert creator(bitbucket, "tools/ci", f"{0:040x}") == "consumer:consumer-b"


IN = "of BITBUCKET_CREDENTIALS"
BAD_DOCUMENTS = [
    ([{"token": "t-1"}, {"tokn": "t-2"}], f"entry 2 {IN} has an unknown field: 'tokn'"),
    ([{"token": "t-1", "repository": ["acme/*"]}], f"entry 1 {IN} has an unknown field: 'repository'"),
    ([{"token": "t-1"}, {"token": "t-2", "ATATT3x-SECRET": 1}], f"entry 2 {IN} has an unknown field: (a field that"),
    ([{"token": "t-1"}, "t-2"], f"entry 2 {IN} is not a JSON object"),
    ([{"token": "t-1", "username": "u", "password": "p"}], f"entry 1 {IN} does not hold Bitbucket credentials"),
    ([{"token": "t-1", "repositories": "acme/*"}], f'entry 1 {IN} has "repositories" that are not'),
    ([{"token": "t-1", "repositories": ["acme"]}], f'entry 1 {IN} has "repositories" that are not'),
    ([], "BITBUCKET_CREDENTIALS does not hold Bitbucket credentials"),
]


@pytest.mark.parametrize(("document", "message"), BAD_DOCUMENTS)
def test_a_bad_document_is_a_configuration_error_naming_the_source_and_position_never_a_value(
    bitbucket, monkeypatch, capsys, document, message
):
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    with pytest.raises(main.ConfigurationError) as raised:
        deliver(build("SUCCESS"))
    assert message in str(raised.value)
    out = capsys.readouterr().out
    for value in ("t-1", "t-2", "ATATT3x", "acme/*"):
        assert value not in str(raised.value)
        assert value not in out
    assert bitbucket.app.calls == []


# --- the hourly budget goes to what matters -------------------------------------------


def test_an_in_progress_state_refused_with_429_is_acknowledged_with_a_warning(bitbucket, capsys):
    bitbucket.app.fail_next("429")
    deliver(build("WORKING"))  # does not raise: a later state supersedes it
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert line["message"].startswith("Did not post INPROGRESS (Running): Bitbucket answered 429")
    assert "a later state of the build supersedes it" in line["message"]


def test_a_final_state_refused_with_429_is_redelivered_and_lands(bitbucket):
    bitbucket.app.fail_next("429")
    with pytest.raises(main.RateLimited):
        deliver(build("SUCCESS"))
    deliver(build("SUCCESS"))  # the redelivery
    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", build()["substitutions"]["COMMIT_SHA"])] == [
        "SUCCESSFUL"
    ]


def test_after_near_limit_only_final_states_are_posted_with_that_credential(three_entries, capsys):
    three_entries.app.budget, three_entries.app.near_limit_share = 1000, 0.001  # near the limit at once
    deliver(build("SUCCESS", "b-0", repo="acme/webapp", commit="0" * 40))
    calls = len(three_entries.app.calls)
    deliver(build("QUEUED", "b-1", repo="acme/webapp", commit=COMMIT))
    deliver(build("WORKING", "b-1", repo="acme/webapp", commit=COMMIT))
    assert len(three_entries.app.calls) == calls  # nothing sent
    deliver(build("SUCCESS", "b-1", repo="acme/webapp", commit=COMMIT))
    assert len(three_entries.app.calls) == calls + 1  # the result: one call
    deliver(build("WORKING", "b-2", repo="acme/api", commit=COMMIT))  # another entry, its own budget
    assert [s["state"] for s in three_entries.app.shown("acme", "api", COMMIT)] == ["INPROGRESS"]
    lines = log_lines(capsys.readouterr().out)
    warnings = [line for line in lines if "nearly spent (X-RateLimit-Limit 1000)" in line["message"]]
    assert [w["credential"] for w in warnings] == [1, 2]  # the allowance, once per cooldown and entry
    skipped = [line for line in lines if line.get("build_id") == "b-1" and line["state"] == "INPROGRESS"]
    assert [line["message"] for line in skipped] == [
        f"Did not post INPROGRESS ({what}): {main.BUDGET_SPENT}" for what in ("Queued", "Running")
    ]


def test_the_cooldown_ends(three_entries, monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_COOLDOWN_SECONDS", "0")
    three_entries.app.budget, three_entries.app.near_limit_share = 1000, 0.001
    deliver(build("SUCCESS", "b-0", repo="acme/webapp", commit="0" * 40))
    deliver(build("WORKING", "b-1", repo="acme/webapp", commit=COMMIT))
    assert [s["state"] for s in three_entries.app.shown("acme", "webapp", COMMIT)] == ["INPROGRESS"]
