"""Where credentials come from, how they are used, and that they never leak."""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import pytest
import requests

import relay.credentials
import relay.errors
import relay.repository
import relay.transport
from standins.bitbucket import json_body
from standins.builds import build
from tests.conftest import DOCUMENT, KMS_KEY, creator, deliver, log_lines, shown

COMMIT = "c" * 40
API_TOKEN = "ATATT3xKPrtec7qw99QbIUrkjTAXQUD"
REVOKED = "revoked-token-Y6CTkdNj621b-9Ce5tShDwUH"
OLD_API_TOKEN = "ATATT3xUHC-R_b2X4BmS3NwXNNQgiro"
NEW_API_TOKEN = "ATATT3xaXApEDdpgh6t91yGeZa2-xX4"
ROTATED_API_TOKEN = "ATATT3x7WdSl-p4_yiw85KChlrXIsNC"
ACCESS_TOKEN = "repository-access-token-BLqGwpofKRSFFUeG_QkjcOZt"
CONSUMER_SECRET = "consumer-secret-7HOAIoksibSZpIRLZh8vVP-0"
ROTATED_SECRET = "rotated-secret-JTTuavxyMvCaFm3y_w7Z9wD7"
NEWER_TOKEN = "a-newer-token-gJ0-uUbOPfTbOqMKIBAxBvLH"  # one Bitbucket does not know
OPS_ROTATED = "ATATT3xpjvULH6J5Roizskz0Z8OWGlp"  # the ops entry's, rotated
CONSUMER_A_SECRET = "consumer-a-secret-h1rgIeTlmLQ3hsOCRmzfQARj"
CONSUMER_B_SECRET = "consumer-b-secret-4R418D033V8p4ckbFbsJvd22"
ACME_TOKEN = "acme-repository-token-6w61pFCj9eLvXiMrxvYaXgYu"
OTHER_TOKEN = "other-repository-token-0AHNIVFv83dsUv4iurR3670b"


def test_username_and_api_token_sign_in_with_http_basic(bitbucket, monkeypatch):
    bitbucket.app.accept_basic("dev@acme.example", API_TOKEN)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"username": "dev@acme.example", "password": API_TOKEN}))
    deliver(build("SUCCESS"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_access_token_signs_in_as_bearer(bitbucket):
    deliver(build("SUCCESS"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set one of BITBUCKET_CREDENTIALS_FILE, BITBUCKET_CREDENTIALS, CREDENTIALS_SECRET, or SECRETS_BUCKET"),
        ({"BITBUCKET_CREDENTIALS_FILE": "/x", "CREDENTIALS_SECRET": "projects/p/secrets/s"},
         "found BITBUCKET_CREDENTIALS_FILE, CREDENTIALS_SECRET"),
        ({"BITBUCKET_CREDENTIALS": "{}", "SECRETS_BUCKET": "b"}, "found BITBUCKET_CREDENTIALS, SECRETS_BUCKET"),
        ({"BITBUCKET_CREDENTIALS": "{}", "CREDENTIALS_SECRET": "projects/p/secrets/s"},
         "found BITBUCKET_CREDENTIALS, CREDENTIALS_SECRET"),
        ({"SECRETS_BUCKET": "b", "SECRETS_OBJECT": "o"}, "the bucket credential source also needs KMS_CRYPTO_KEY_ID"),
        ({"SECRETS_BUCKET": "b"}, "the bucket credential source also needs SECRETS_OBJECT, KMS_CRYPTO_KEY_ID"),
    ],
)  # fmt: skip
def test_none_two_or_half_a_credential_source_is_a_configuration_error_naming_the_variables(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(relay.errors.ConfigurationError, match=re.escape(message)):
        deliver(build("SUCCESS"))


def test_an_invalid_credential_is_refetched_once_then_raised_for_redelivery(bitbucket, monkeypatch, capsys):
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": REVOKED}))
    with pytest.raises(relay.errors.TransientError, match="credentials refused after fetching them again") as raised:
        deliver(build("SUCCESS"))
    assert [c.status for c in bitbucket.app.calls] == [401, 401]
    assert REVOKED not in str(raised.value)
    assert REVOKED not in capsys.readouterr().out


# --- the bucket source: the original function's design, with the real client libraries ---


def test_bucket_credentials_are_fetched_and_decrypted_once_per_instance(bucket_credentials, google, storage, bitbucket):
    decrypts, downloads = google.app.counts["kms.decrypt"], storage.downloads
    deliver(build("SUCCESS", "b-1"))
    assert (google.app.counts["kms.decrypt"] - decrypts, storage.downloads - downloads) == (1, 1)
    deliver(build("SUCCESS", "b-2", commit="a" * 40))
    assert (google.app.counts["kms.decrypt"] - decrypts, storage.downloads - downloads) == (1, 1)
    assert len(shown(bitbucket)) == 1
    assert len(shown(bitbucket, commit="a" * 40)) == 1


def test_bucket_credentials_rotate_on_a_warm_instance(bucket_credentials, google, bitbucket):
    # An API token rotated for the same account: the account may overwrite its own statuses.
    bitbucket.app.accept_basic("ci@acme.example", OLD_API_TOKEN)
    bucket_credentials({"username": "ci@acme.example", "password": OLD_API_TOKEN})
    deliver(build("WORKING", "b-1"))
    decrypts = google.app.counts["kms.decrypt"]
    bitbucket.app.revoke_all()
    bitbucket.app.accept_basic("ci@acme.example", NEW_API_TOKEN)
    bucket_credentials({"username": "ci@acme.example", "password": NEW_API_TOKEN})
    deliver(build("FAILURE", "b-1"))
    assert google.app.counts["kms.decrypt"] - decrypts == 1
    assert [s["state"] for s in shown(bitbucket)] == ["FAILED"]


def test_bucket_object_encrypted_with_another_key_is_a_configuration_error(
    bucket_credentials, google, storage, monkeypatch
):
    storage.put(
        "acme-secrets", "other.enc", google.app.encrypt("projects/p/locations/l/keyRings/r/cryptoKeys/other", b"{}")
    )
    monkeypatch.setenv("SECRETS_OBJECT", "other.enc")
    with pytest.raises(relay.errors.ConfigurationError, match=re.escape("gs://acme-secrets/other.enc")) as raised:
        deliver(build("SUCCESS"))
    assert "400" in str(raised.value)


def test_a_missing_bucket_object_is_a_configuration_error(bucket_credentials, monkeypatch):
    monkeypatch.setenv("SECRETS_OBJECT", "missing.enc")
    with pytest.raises(relay.errors.ConfigurationError, match=r"gs://acme-secrets/missing\.enc.*404"):
        deliver(build("SUCCESS"))


def test_an_error_answer_from_bitbucket_is_reported(bucket_credentials, bitbucket, capsys):
    bitbucket.app.repositories = {"acme/another"}
    deliver(build("SUCCESS"))
    [refused] = [line for line in log_lines(capsys.readouterr().out) if "404" in line["message"]]
    assert refused["severity"] == "WARNING"  # the repository a build names is its author's to mend: no page


# --- every source with every shape; OAuth consumers; Secret Manager; rotation ---

SHAPES = {
    "api token": {"username": "ci@acme.example", "password": API_TOKEN},
    "access token": {"token": ACCESS_TOKEN},
    "oauth consumer": {"client_id": "consumer-key", "client_secret": CONSUMER_SECRET},
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_source_works_with_every_credential_shape(bitbucket, credential_store, monkeypatch, shape):
    bitbucket.app.revoke_all()
    bitbucket.app.accept_basic("ci@acme.example", API_TOKEN)
    bitbucket.app.accept_token(ACCESS_TOKEN)
    bitbucket.app.accept_consumer("consumer-key", CONSUMER_SECRET)
    monkeypatch.setenv("BITBUCKET_OAUTH_TOKEN_URL", bitbucket.token_url)
    credential_store(SHAPES[shape])
    deliver(build("WORKING"))
    deliver(build("SUCCESS"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def oauth(bitbucket, monkeypatch, store) -> None:
    bitbucket.app.accept_consumer("consumer-key", CONSUMER_SECRET)
    monkeypatch.setenv("BITBUCKET_OAUTH_TOKEN_URL", bitbucket.token_url)
    store(SHAPES["oauth consumer"])


def token_requests(bitbucket) -> int:
    return sum(1 for call in bitbucket.app.calls if call.path == "/site/oauth2/access_token")


def test_one_oauth_token_serves_many_events(bitbucket, environment_credentials, monkeypatch):
    oauth(bitbucket, monkeypatch, environment_credentials)
    for n in range(5):
        deliver(build("SUCCESS", f"b-{n}", commit=f"{n:040x}"))
    assert token_requests(bitbucket) == 1
    assert all(shown(bitbucket, commit=f"{n:040x}") for n in range(5))


def test_an_oauth_token_is_renewed_shortly_before_it_expires(bitbucket, environment_credentials, monkeypatch):
    bitbucket.app.token_lifetime = 2  # renewed once less than a second is left
    oauth(bitbucket, monkeypatch, environment_credentials)
    deliver(build("WORKING"))
    time.sleep(1.1)
    deliver(build("SUCCESS"))
    assert token_requests(bitbucket) == 2
    assert [c.status for c in bitbucket.app.calls if c.status == 401] == []


def test_an_oauth_token_bitbucket_no_longer_accepts_is_replaced(bitbucket, environment_credentials, monkeypatch):
    oauth(bitbucket, monkeypatch, environment_credentials)
    deliver(build("WORKING"))
    bitbucket.app._oauth_tokens.clear()  # Bitbucket revokes the token early
    deliver(build("SUCCESS"))
    assert token_requests(bitbucket) == 2
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_an_oauth_consumer_rotated_while_its_token_expired_is_fetched_again(
    bitbucket, secret_credentials, google, monkeypatch
):
    bitbucket.app.token_lifetime = 2  # renewed once less than a second is left
    oauth(bitbucket, monkeypatch, secret_credentials)
    deliver(build("WORKING"))
    reads = google.app.counts["secretmanager.access"]
    bitbucket.app.accept_consumer("consumer-key", ROTATED_SECRET)  # the consumer's secret is regenerated
    secret_credentials({"client_id": "consumer-key", "client_secret": ROTATED_SECRET})
    time.sleep(1.1)  # the token runs out: the next event exchanges the consumer again
    deliver(build("SUCCESS"))
    assert google.app.counts["secretmanager.access"] - reads == 1
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_a_refused_oauth_consumer_raises_without_showing_its_secret(bitbucket, environment_credentials, monkeypatch):
    monkeypatch.setenv("BITBUCKET_OAUTH_TOKEN_URL", bitbucket.token_url)
    environment_credentials(SHAPES["oauth consumer"])
    with pytest.raises(
        relay.errors.TransientError,
        match="Bitbucket refused the OAuth consumer of credential entry 1: 400 Invalid OAuth",
    ) as raised:
        deliver(build("SUCCESS"))
    assert CONSUMER_SECRET not in str(raised.value)


class StoppedClock:
    """relay.credentials' clock: it moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("expires_in", "renewed_after"),
    [(7200, 7140.0), (1, 0.5), (None, 3540.0), (0, 3540.0), ("soon", 3540.0)],
    ids=["a minute before it expires", "half a short lifetime", "no lifetime: an hour", "0: an hour", "text: an hour"],
)
def test_an_oauth_token_is_renewed_a_minute_before_it_expires_or_after_an_hour_when_its_lifetime_is_not_usable(
    bitbucket, environment_credentials, monkeypatch, expires_in, renewed_after
):
    clock = StoppedClock()
    monkeypatch.setattr(relay.credentials, "time", clock)
    issues = bitbucket.app._token

    def with_lifetime(request: Any) -> Any:
        answer = {k: v for k, v in issues(request).get_json().items() if k != "expires_in"}
        return json_body(answer if expires_in is None else {**answer, "expires_in": expires_in})

    monkeypatch.setattr(bitbucket.app, "_token", with_lifetime)
    oauth(bitbucket, monkeypatch, environment_credentials)
    deliver(build("QUEUED"))
    clock.now += renewed_after - 0.25
    deliver(build("WORKING"))
    assert token_requests(bitbucket) == 1
    clock.now += 0.25
    deliver(build("SUCCESS"))
    assert token_requests(bitbucket) == 2


@pytest.mark.parametrize(
    ("answer", "exchanges"), [(401, 2), (503, 1 + relay.transport.HTTP_RETRIES)], ids=["refused", "failing"]
)
def test_a_refused_oauth_consumer_is_tried_once_more_with_the_credentials_read_again_and_a_failing_endpoint_is_not(
    bitbucket, environment_credentials, monkeypatch, answer, exchanges
):
    """Refused (its secret may have been rotated since it was read): the document is read again and the consumer
    exchanged once more. A token endpoint that fails is retried inside the call, then the event is redelivered."""
    oauth(bitbucket, monkeypatch, environment_credentials)
    monkeypatch.setattr(bitbucket.app, "_token", lambda request: json_body({"error": "invalid_client"}, answer))
    said = f"Bitbucket refused the OAuth consumer of credential entry 1: {answer} invalid_client"
    with pytest.raises(relay.errors.TransientError, match=f"^{said}$"):
        deliver(build("SUCCESS"))
    assert token_requests(bitbucket) == exchanges


def test_secret_manager_is_read_once_per_instance(bitbucket, secret_credentials, google):
    reads = google.app.counts["secretmanager.access"]
    for n in range(3):
        deliver(build("SUCCESS", f"b-{n}", commit=f"{n:040x}"))
    assert google.app.counts["secretmanager.access"] - reads == 1


def test_a_pinned_secret_version_is_read_as_named(bitbucket, secret_credentials, google, monkeypatch):
    secret = os.environ["CREDENTIALS_SECRET"]
    secret_credentials({"token": NEWER_TOKEN})
    monkeypatch.setenv("CREDENTIALS_SECRET", f"{secret}/versions/1")
    deliver(build("SUCCESS"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


@pytest.mark.parametrize("value", ["my-secret", "projects/p/secrets/s/extra", "projects/p/secrets/s/versions/1/x"])
def test_a_malformed_secret_name_is_a_configuration_error(monkeypatch, value):
    monkeypatch.setenv("CREDENTIALS_SECRET", value)
    said = "CREDENTIALS_SECRET must be projects/PROJECT/secrets/SECRET, optionally with /versions/VERSION"
    with pytest.raises(relay.errors.ConfigurationError, match=f"^{re.escape(said)}$"):
        deliver(build("SUCCESS"))


def test_a_missing_secret_is_a_configuration_error_naming_it(bitbucket, secret_credentials, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_SECRET", "projects/local-project/secrets/absent")
    opening = "reading credentials from projects/local-project/secrets/absent/versions/latest failed: NotFound 404: "
    with pytest.raises(relay.errors.ConfigurationError, match=f"^{re.escape(opening)}"):
        deliver(build("SUCCESS"))


def test_a_secret_that_holds_no_credentials_is_a_configuration_error_naming_it(bitbucket, secret_credentials, google):
    secret = os.environ["CREDENTIALS_SECRET"]
    google.app.add_secret_version(secret, b"[]")
    said = f"{secret}/versions/latest (CREDENTIALS_SECRET) does not hold Bitbucket credentials"
    with pytest.raises(relay.errors.ConfigurationError, match=f"^{re.escape(said)}"):
        deliver(build("SUCCESS"))


def test_a_bucket_object_that_holds_no_credentials_is_a_configuration_error_naming_it(
    bucket_credentials, google, storage, monkeypatch
):
    storage.put("acme-secrets", "empty.enc", google.app.encrypt(KMS_KEY, b"[]"))
    monkeypatch.setenv("SECRETS_OBJECT", "empty.enc")
    said = "gs://acme-secrets/empty.enc (decrypted with KMS_CRYPTO_KEY_ID) does not hold Bitbucket credentials"
    with pytest.raises(relay.errors.ConfigurationError, match=f"^{re.escape(said)}"):
        deliver(build("SUCCESS"))


@pytest.mark.parametrize("source", ["secret", "bucket", "oauth"])
def test_rotation_reaches_a_warm_instance_with_one_refetch_and_no_event_lost(
    request, bitbucket, google, storage, monkeypatch, source
):
    store = request.getfixturevalue("bucket_credentials" if source == "bucket" else "secret_credentials")
    if source == "oauth":
        old, new = SHAPES["oauth consumer"], {"client_id": "consumer-key", "client_secret": ROTATED_SECRET}
        monkeypatch.setenv("BITBUCKET_OAUTH_TOKEN_URL", bitbucket.token_url)
        bitbucket.app.accept_consumer("consumer-key", CONSUMER_SECRET)
    else:
        old, new = SHAPES["api token"], {"username": "ci@acme.example", "password": ROTATED_API_TOKEN}
        bitbucket.app.accept_basic("ci@acme.example", API_TOKEN)
    store(old)
    fetches = lambda: google.app.counts["secretmanager.access"] + google.app.counts["kms.decrypt"]  # noqa: E731
    deliver(build("WORKING"))
    before = fetches()

    bitbucket.app.revoke_all()  # Bitbucket revokes the old credential ...
    if source == "oauth":
        bitbucket.app.accept_consumer("consumer-key", ROTATED_SECRET)
    else:
        bitbucket.app.accept_basic("ci@acme.example", ROTATED_API_TOKEN)
    store(new)  # ... and the stored one is replaced
    deliver(build("SUCCESS"))

    assert fetches() - before == 1
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


# --- a file: a secret Cloud Run mounts, read again when Bitbucket says 401 ---------


def test_a_credentials_file_is_read_once_and_again_when_its_token_is_refused(bitbucket, file_credentials):
    deliver(build("WORKING"))
    file_credentials("this is not read while the token works")
    deliver(build("WORKING", "b-2", commit="a" * 40))  # the instance keeps what it read
    assert len(shown(bitbucket, commit="a" * 40)) == 1
    bitbucket.app.revoke_all()  # the old token is revoked: the next 401 reads the file again
    with pytest.raises(relay.errors.ConfigurationError, match="BITBUCKET_CREDENTIALS_FILE"):
        deliver(build("SUCCESS"))


def test_a_rewritten_credentials_file_rotates_a_warm_instance_with_nothing_lost(bitbucket, file_credentials):
    bitbucket.app.accept_basic("ci@acme.example", OLD_API_TOKEN)
    file_credentials({"username": "ci@acme.example", "password": OLD_API_TOKEN})
    deliver(build("QUEUED"))
    bitbucket.app.revoke_all()  # Bitbucket revokes the old token; a new secret version is mounted
    bitbucket.app.accept_basic("ci@acme.example", NEW_API_TOKEN)
    file_credentials({"username": "ci@acme.example", "password": NEW_API_TOKEN})
    deliver(build("WORKING"))
    deliver(build("SUCCESS"))
    assert [(s["state"], s["description"]) for _, s in bitbucket.app.history] == [
        ("INPROGRESS", "Queued"),
        ("INPROGRESS", "Running"),
        ("SUCCESSFUL", "Succeeded in 3m 12s"),
    ]


@pytest.mark.parametrize("problem", ["missing", "a directory", "not json", "empty", "not utf-8"])
def test_a_bad_credentials_file_is_a_configuration_error_naming_the_variable_and_path_not_the_content(
    bitbucket, file_credentials, capsys, problem
):
    path = file_credentials.path
    if problem == "missing":
        path.unlink()
    elif problem == "a directory":
        path.unlink()
        path.mkdir()
    elif problem == "not utf-8":
        path.write_bytes(b'{"token": "secret-looking-text\x80\x81"}')
    else:
        file_credentials("{token: secret-looking-text" if problem == "not json" else "")
    with pytest.raises(relay.errors.ConfigurationError) as raised:
        deliver(build("SUCCESS"))
    assert f"BITBUCKET_CREDENTIALS_FILE ({path})" in str(raised.value)
    out = capsys.readouterr().out
    assert "secret-looking-text" not in out + str(raised.value)
    assert log_lines(out)[-1]["severity"] == "ERROR"
    assert bitbucket.app.calls == []


def test_rotating_one_entry_in_secret_manager_reaches_a_warm_instance_with_one_more_read(
    three_entries, secret_credentials, google
):
    secret_credentials(DOCUMENT)
    deliver(build("WORKING", "b-1", repo="ops/deploy", commit=COMMIT))
    deliver(build("WORKING", "b-2", repo="acme/webapp", commit=COMMIT))
    reads = google.app.counts["secretmanager.access"]
    # Entry 3's API token is rotated for the same account (which may overwrite its own statuses).
    three_entries.app.basic.pop("ci@acme.example")
    three_entries.app.accept_basic("ci@acme.example", OPS_ROTATED)
    secret_credentials([*DOCUMENT[:2], {**DOCUMENT[2], "password": OPS_ROTATED}])
    deliver(build("SUCCESS", "b-1", repo="ops/deploy", commit=COMMIT))
    deliver(build("SUCCESS", "b-2", repo="acme/webapp", commit=COMMIT))
    assert google.app.counts["secretmanager.access"] - reads == 1
    assert [s["state"] for s in three_entries.app.shown("ops", "deploy", COMMIT)] == ["SUCCESSFUL"]
    assert [s["state"] for s in three_entries.app.shown("acme", "webapp", COMMIT)] == ["SUCCESSFUL"]


def test_one_oauth_token_per_consumer_entry(bitbucket, monkeypatch):
    bitbucket.app.accept_consumer("consumer-a", CONSUMER_A_SECRET)
    bitbucket.app.accept_consumer("consumer-b", CONSUMER_B_SECRET)
    monkeypatch.setenv("BITBUCKET_OAUTH_TOKEN_URL", bitbucket.token_url)
    document = [
        {"client_id": "consumer-a", "client_secret": CONSUMER_A_SECRET, "repositories": ["acme/*"]},
        {"client_id": "consumer-b", "client_secret": CONSUMER_B_SECRET, "repositories": ["tools/*"]},
    ]
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    for n in range(6):
        deliver(build("SUCCESS", f"b-{n}", repo="acme/webapp" if n % 2 else "tools/ci", commit=f"{n:040x}"))
    assert sum(1 for c in bitbucket.app.calls if c.path == "/site/oauth2/access_token") == 2
    assert creator(bitbucket, "acme/webapp", f"{1:040x}") == "consumer:consumer-a"
    assert creator(bitbucket, "tools/ci", f"{0:040x}") == "consumer:consumer-b"


def test_a_credentials_file_that_cannot_be_read_this_time_is_a_transient_error(bitbucket, monkeypatch, capsys):
    """An I/O error (here /proc/self/mem, which answers every read with EIO), as when a mounted secret could
    not be served, is worth another try: the event is redelivered, not held as a configuration error."""
    monkeypatch.delenv("BITBUCKET_CREDENTIALS")
    monkeypatch.setenv("BITBUCKET_CREDENTIALS_FILE", "/proc/self/mem")
    with pytest.raises(relay.errors.TransientError):
        deliver(build("SUCCESS"))
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING"
    assert (
        line["message"] == "Will retry: BITBUCKET_CREDENTIALS_FILE (/proc/self/mem) cannot be read: Input/output error"
    )


def test_an_entry_removed_while_its_events_are_in_flight_skips_them_at_once(bitbucket, file_credentials, capsys):
    """The instance read the document with acme's entry; it was rotated out (and its token revoked) before the
    next acme event was posted: that event is skipped with one INFO line, not raised as a configuration error."""
    acme, other = ACME_TOKEN, OTHER_TOKEN
    bitbucket.app.revoke_all()
    bitbucket.app.accept_token(acme)
    bitbucket.app.accept_token(other)
    file_credentials([{"token": acme, "repositories": ["acme/*"]}, {"token": other, "repositories": ["other/*"]}])
    deliver(build("WORKING"))
    file_credentials([{"token": other, "repositories": ["other/*"]}])
    bitbucket.app.revoke_all()
    bitbucket.app.accept_token(other)
    capsys.readouterr()
    deliver(build("SUCCESS"))  # acknowledged
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "INFO"
    assert line["message"] == "Skipped: no entry of the credentials serves acme/webapp any more, so nothing is sent"
    assert [s["state"] for s in shown(bitbucket)] == ["INPROGRESS"]


def test_reading_secret_manager_ends_by_the_events_deadline(bitbucket, secret_credentials, google, monkeypatch):
    google.app.secret_delay = 3
    monkeypatch.setenv("EVENT_DEADLINE_SECONDS", "1")
    started = time.monotonic()
    with pytest.raises(relay.errors.TransientError):
        deliver(build("SUCCESS"))
    assert time.monotonic() - started < 2.5
    assert bitbucket.app.calls == []


# --- what Secret Manager or KMS answers instead of the credentials: the operator's to mend, or worth another try ---


def answering(request, google, monkeypatch, source: str, answer: int) -> str:
    """The source (Secret Manager, or the bucket's object and KMS) set up, KMS or Secret Manager answering `answer`
    from now on; returns how errors name the source."""
    request.getfixturevalue(f"{source}_credentials")
    monkeypatch.setattr(google.app, "kms_answer" if source == "bucket" else "secret_answer", answer)
    if source == "bucket":
        return "gs://acme-secrets/bitbucket-credentials.json.enc"
    return f"{os.environ['CREDENTIALS_SECRET']}/versions/latest"


@pytest.mark.parametrize("source", ["secret", "bucket"])
@pytest.mark.parametrize(("answer", "named"), [(400, "BadRequest"), (403, "Forbidden"), (404, "NotFound")])
def test_a_credential_source_refusing_the_function_is_an_error_the_operator_must_mend_naming_what_and_where(
    request, google, monkeypatch, capsys, source, answer, named
):
    """Secret Manager or KMS refusing the function's service account (403: a role removed), or a request it cannot
    serve: the operator's to mend, so one ERROR (not a WARNING of a retry) says what answered and where; the event
    waits for the fix."""
    where = answering(request, google, monkeypatch, source, answer)
    with pytest.raises(relay.errors.ConfigurationError) as raised:
        deliver(build("SUCCESS"))
    assert str(raised.value).startswith(f"reading credentials from {where} failed: {named} {answer}: ")
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "ERROR"


@pytest.mark.parametrize(
    ("source", "answer"), [("secret", 429), ("secret", 503), ("bucket", 429), ("bucket", 500), ("bucket", 503)]
)
def test_a_credential_source_failing_for_now_is_tried_until_the_events_deadline_then_redelivered_naming_where(
    request, google, bitbucket, monkeypatch, capsys, source, answer
):
    """Secret Manager or KMS overloaded or failing: tried again while the event's deadline allows (Google's clients
    would go on for 60 s whatever the deadline), then raised for Pub/Sub to deliver it again, with a WARNING
    saying where and what last answered (no ERROR: nothing for the operator to mend)."""
    monkeypatch.setenv("EVENT_DEADLINE_SECONDS", "1")
    where = answering(request, google, monkeypatch, source, answer)
    with pytest.raises(relay.errors.TransientError) as raised:
        deliver(build("SUCCESS"))
    said = rf"reading credentials from {re.escape(where)} failed: RetryError: Timeout of [01]\.\ds exceeded, "
    assert re.match(rf"{said}last exception: {answer} ", str(raised.value))
    [line] = log_lines(capsys.readouterr().out)
    assert (line["severity"], re.match(f"Will retry: {said}", line["message"]) is not None) == ("WARNING", True)
    assert bitbucket.app.calls == []


def test_a_stalled_kms_ends_the_event_by_its_deadline_and_nothing_is_sent_late(
    bucket_credentials, google, bitbucket, monkeypatch
):
    """KMS answering after the event's deadline: the event ends at the deadline and is redelivered; it does not
    wait for the answer and write Bitbucket after the function's timeout would have killed it."""
    monkeypatch.setattr(google.app, "kms_delay", 3)
    monkeypatch.setenv("EVENT_DEADLINE_SECONDS", "1")
    with pytest.raises(relay.errors.TransientError, match=r"^reading credentials from gs://acme-secrets/"):
        deliver(build("SUCCESS"))
    assert bitbucket.app.calls == []


# --- 401s answered to a header already replaced: the document is read again once, not once per 401 ---------------

WEBAPP_REPOSITORY = relay.repository.Repository("acme", "webapp")


def keyring() -> relay.credentials.Keyring:
    """The keyring a warm instance signs Bitbucket's requests with, reading the configured source."""
    return relay.credentials.Keyring(relay.credentials.credential_source(os.environ), requests.Session(), "", 5)


def test_concurrent_401s_to_a_rotated_credential_read_the_document_again_once(secret_credentials, google):
    """Events in flight all got a 401 for the old token: the first reads the rotated document, the others sign with
    what it read instead of reading it again each."""
    keys = keyring()
    _, old = keys.sign(WEBAPP_REPOSITORY)
    secret_credentials({"token": ROTATED_API_TOKEN})
    reads = google.app.counts["secretmanager.access"]
    headers = [keys.sign(WEBAPP_REPOSITORY, refused=old)[1] for _ in range(3)]
    assert headers == [f"Bearer {ROTATED_API_TOKEN}"] * 3
    assert google.app.counts["secretmanager.access"] - reads == 1


def test_a_401_after_jira_refused_an_entry_reads_the_document_again_once(secret_credentials, google):
    """Jira's refusal already marked the document to be read again (it may be rotated): a Bitbucket 401 that follows
    reads it once, not once for the 401 and once more."""
    keys = keyring()
    _, header = keys.sign(WEBAPP_REPOSITORY)
    keys.read_again()
    reads = google.app.counts["secretmanager.access"]
    assert keys.sign(WEBAPP_REPOSITORY, refused=header)[1] == header
    assert google.app.counts["secretmanager.access"] - reads == 1


def test_events_in_flight_for_a_repository_whose_entry_was_removed_are_each_skipped(secret_credentials, google):
    """The rotated document no longer serves acme/webapp: every event that got a 401 for its old token is skipped
    (NotServed: an INFO line), the document read again once."""
    keys = keyring()
    _, old = keys.sign(WEBAPP_REPOSITORY)
    secret_credentials({"token": ROTATED_API_TOKEN, "repositories": ["other/*"]})
    reads = google.app.counts["secretmanager.access"]
    for _ in range(2):
        with pytest.raises(relay.errors.NotServed):
            keys.sign(WEBAPP_REPOSITORY, refused=old)
    assert google.app.counts["secretmanager.access"] - reads == 1


@pytest.mark.parametrize("answer", [{}, {"access_token": 5}, {"access_token": ""}], ids=["none", "a number", "empty"])
def test_a_token_endpoint_answering_200_without_a_token_is_refused_and_nothing_is_sent_unsigned(
    bitbucket, environment_credentials, monkeypatch, answer
):
    """An answer of 200 with no usable access_token (a proxy's page, a broken endpoint) is the endpoint failing: the
    event is redelivered, and no request goes to Bitbucket with "Bearer None" or "Bearer 5"."""
    oauth(bitbucket, monkeypatch, environment_credentials)
    monkeypatch.setattr(bitbucket.app, "_token", lambda request: json_body({**answer, "token_type": "bearer"}))
    said = "Bitbucket refused the OAuth consumer of credential entry 1: 200 OK"
    with pytest.raises(relay.errors.TransientError, match=f"^{said}$"):
        deliver(build("SUCCESS"))
    assert [call.path for call in bitbucket.app.calls] == ["/site/oauth2/access_token"]
