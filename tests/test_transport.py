"""Every outbound call verifies TLS and has a timeout: shown against a real server, not read off the code."""

from __future__ import annotations

import json
import time

import pytest

import relay.errors
import relay.transport
from standins.bitbucket import Bitbucket
from standins.builds import build
from standins.tls import self_signed
from tests.conftest import TOKEN, deliver, shown

CONSUMER_SECRET = "consumer-secret-0jmL9cl4h0s5uS96EfYUuK9y"
OTHER_CONSUMER_SECRET = "consumer-secret-sxTeaXtYNEm8hcFstxGrh17C"


@pytest.fixture
def tls_bitbucket(tmp_path, monkeypatch):
    cert, context = self_signed(tmp_path)
    app = Bitbucket()
    app.accept_token(TOKEN)
    app.accept_consumer("consumer-key", CONSUMER_SECRET)
    server = app.serve(ssl_context=context)
    monkeypatch.setenv("BITBUCKET_API_URL", server.api_url)
    monkeypatch.setenv("BITBUCKET_OAUTH_TOKEN_URL", server.token_url)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": TOKEN}))
    yield server, cert
    server.stop()


def test_a_certificate_nobody_trusts_is_refused_and_nothing_is_sent(tls_bitbucket, monkeypatch):
    server, _ = tls_bitbucket
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    with pytest.raises(relay.errors.TransientError, match="is not trusted, so nothing was sent"):
        deliver(build("SUCCESS"))
    assert server.app.calls == []


def test_the_same_server_is_used_once_its_certificate_is_trusted(tls_bitbucket, monkeypatch):
    server, cert = tls_bitbucket
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    deliver(build("SUCCESS"))
    assert [s["state"] for s in shown(server)] == ["SUCCESSFUL"]


def test_the_oauth_token_request_verifies_tls_too(tls_bitbucket, monkeypatch):
    server, _ = tls_bitbucket
    monkeypatch.setenv(
        "BITBUCKET_CREDENTIALS", json.dumps({"client_id": "consumer-key", "client_secret": CONSUMER_SECRET})
    )
    with pytest.raises(relay.errors.TransientError, match="is not trusted, so nothing was sent"):
        deliver(build("SUCCESS"))
    assert server.app.calls == []


@pytest.mark.parametrize(
    ("status", "credentials", "first_call"),
    [
        ("SUCCESS", {"token": TOKEN}, "GET"),  # a new instance reads before a final state too
        ("WORKING", {"token": TOKEN}, "GET"),
        ("SUCCESS", {"client_id": "consumer-key", "client_secret": OTHER_CONSUMER_SECRET}, "POST /site/oauth2"),
    ],
)
def test_a_server_that_never_answers_cannot_hold_the_function(bitbucket, monkeypatch, status, credentials, first_call):
    """Bitbucket holds every answer for a minute; the call gives up after its timeout and its retries."""
    bitbucket.app.accept_consumer("consumer-key", OTHER_CONSUMER_SECRET)
    monkeypatch.setenv("BITBUCKET_OAUTH_TOKEN_URL", bitbucket.token_url)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(credentials))
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "0.3")
    bitbucket.app.fault_delay = 60
    bitbucket.app.fail_next(*["timeout"] * (relay.transport.HTTP_RETRIES + 1))
    started = time.monotonic()
    with pytest.raises(relay.errors.TransientError):
        deliver(build(status))
    assert time.monotonic() - started < 30  # without a timeout this would wait 60 s per attempt
    attempts = [f"{c.method} {c.path}" for c in bitbucket.app.calls if c.fault == "timeout"]
    assert len(attempts) == relay.transport.HTTP_RETRIES + 1
    assert all(a.startswith(first_call) for a in attempts)
