"""Where credentials come from, how they are used, and that they never leak."""

from __future__ import annotations

import json
import re

import pytest

import main
from tests.builds import build
from tests.conftest import TOKEN, deliver, log_lines, shown


def test_username_and_api_token_sign_in_with_http_basic(bitbucket, monkeypatch):
    bitbucket.app.accept_basic("dev@acme.example", "ATATT3x-api-token")
    monkeypatch.setenv(
        "BITBUCKET_CREDENTIALS", json.dumps({"username": "dev@acme.example", "password": "ATATT3x-api-token"})
    )
    deliver(build("SUCCESS"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


def test_access_token_signs_in_as_bearer(bitbucket):
    deliver(build("SUCCESS"))
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]


@pytest.mark.parametrize(
    "value",
    ["not json {", '["token"]', '{"user": "x"}', '{"token": ""}', '{"username": "a:b", "password": "p"}', ""],
)
def test_malformed_credentials_are_a_configuration_error_naming_the_variable_not_the_value(
    bitbucket, monkeypatch, capsys, value
):
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", value or " ")
    with pytest.raises(main.ConfigurationError) as raised:
        deliver(build("SUCCESS"))
    assert "BITBUCKET_CREDENTIALS" in str(raised.value)
    out = capsys.readouterr().out
    for secret_part in ("a:b", '"user"', "not json"):
        assert secret_part not in str(raised.value)
        assert secret_part not in out
    assert log_lines(out)[-1]["severity"] == "ERROR"
    assert bitbucket.app.calls == []


def test_no_credentials_at_all_names_every_way_to_configure_them(monkeypatch):
    with pytest.raises(main.ConfigurationError, match="BITBUCKET_CREDENTIALS, or SECRETS_BUCKET"):
        deliver(build("SUCCESS"))


def test_two_credential_sources_are_a_configuration_error(bitbucket, monkeypatch):
    monkeypatch.setenv("SECRETS_BUCKET", "acme-secrets")
    with pytest.raises(main.ConfigurationError, match="found BITBUCKET_CREDENTIALS, SECRETS_BUCKET"):
        deliver(build("SUCCESS"))


def test_half_a_bucket_configuration_says_what_is_missing(monkeypatch):
    monkeypatch.setenv("SECRETS_BUCKET", "acme-secrets")
    monkeypatch.setenv("SECRETS_OBJECT", "creds.enc")
    with pytest.raises(main.ConfigurationError, match="needs KMS_CRYPTO_KEY_ID"):
        deliver(build("SUCCESS"))


def test_credentials_never_show_in_their_repr():
    credentials = main.parse_credentials(json.dumps({"token": TOKEN}), "test")
    assert TOKEN not in repr(credentials)
    assert TOKEN not in str(credentials)


def test_an_invalid_credential_is_refetched_once_then_raised_for_redelivery(bitbucket, monkeypatch, capsys):
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": "revoked-token"}))
    with pytest.raises(main.TransientError, match="credentials refused after fetching them again") as raised:
        deliver(build("SUCCESS"))
    assert [c.status for c in bitbucket.app.calls] == [401, 401]
    assert "revoked-token" not in str(raised.value)
    assert "revoked-token" not in capsys.readouterr().out


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
    bitbucket.app.accept_basic("ci@acme.example", "old-api-token")
    bucket_credentials({"username": "ci@acme.example", "password": "old-api-token"})
    deliver(build("WORKING", "b-1"))
    decrypts = google.app.counts["kms.decrypt"]
    bitbucket.app.revoke_all()
    bitbucket.app.accept_basic("ci@acme.example", "new-api-token")
    bucket_credentials({"username": "ci@acme.example", "password": "new-api-token"})
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
    with pytest.raises(main.ConfigurationError, match=re.escape("gs://acme-secrets/other.enc")) as raised:
        deliver(build("SUCCESS"))
    assert "400" in str(raised.value)


def test_a_missing_bucket_object_is_a_configuration_error(bucket_credentials, monkeypatch):
    monkeypatch.setenv("SECRETS_OBJECT", "missing.enc")
    with pytest.raises(main.ConfigurationError, match=r"gs://acme-secrets/missing\.enc.*404"):
        deliver(build("SUCCESS"))


def test_an_error_answer_from_bitbucket_is_reported(bucket_credentials, bitbucket, capsys):
    bitbucket.app.repositories = {"acme/another"}
    deliver(build("SUCCESS"))
    errors = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "ERROR"]
    assert "404" in errors[0]["message"]
