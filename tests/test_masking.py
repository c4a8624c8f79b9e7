"""No secret leaves: the function's own credentials (every kind, every form a text may show them in) and anything
shaped like a credential are masked in every field sent to Bitbucket, on both sites — the failed step's command and
lines, failureInfo, warnings, approval comments — and a build's own secret substitutions with them; cleaning keeps
what is not a secret."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

import relay.decoding
import relay.masking
import relay.repository
import relay.step_log
import relay.text
import relay.warm
from standins import remember_basic, remember_secret
from standins.builds import COMMIT, build
from tests.conftest import TOKEN, dc_build, deliver, remember_stored

# Each an unmistakable credential, never a word of prose.
OWN_TOKEN = "Y3bHX02KdvhiYcNR0V-0QVDIfWjG_TH7"
# The password changes when URL-encoded, and holds a ':' (HTTP Basic splits at the first: the rest is the password)
BASIC_USER, BASIC_PASSWORD = "ci-bot@acme.example", "dOUZ+unRV/O53qy7:sYZoiv8Yhc=YEirewdZ"
CONSUMER_ID, CONSUMER_SECRET = "hryNPnyeZNVFEVBwhfmBjr", "iVzMBQLx3Ey6SBJz-5UrrI1MxNZZ-t68"
SUBSTITUTED = "IECw8xUT3SELt0zM6voW5B455jHDFt03"  # a build's own _DEPLOY_TOKEN
STEP = {"id": "deploy", "name": "gcr.io/cloud-builders/curl", "status": "FAILURE", "exitCode": 22}
STEPS = [{"id": "checkout", "status": "SUCCESS"}, STEP]
LABEL = 'Step #1 - "deploy"'


def forms(secret: str) -> list[str]:
    """A secret as a text may show it: itself, URL-encoded, and (for a password) the Basic header made of it."""
    return [secret, quote(secret, safe="")]


def parts(secrets: list[str]) -> set[str]:
    """Every 12 characters of each secret in a row: a clipped text must not show even a part of one."""
    return {s[i : i + 12] for s in secrets for i in range(len(s) - 11)}


def leaked(calls: list[Any], secrets: list[str]) -> list[str]:
    sent = json.dumps([call.body for call in calls])
    return sorted(p for p in parts(secrets) if p in sent)


def carrying(make: Any, build_id: str, commit: str, *secrets: str) -> dict[str, Any]:
    """A failed build whose every free text carries the secrets: its failure, its warnings, its step's command."""
    said = " ".join(secrets)
    failed = make("FAILURE", build_id, steps=[{**STEPS[0]}, {**STEP, "args": ["-sf", "-d", said, "https://x"]}],
                  commit=commit, createTime="2026-11-27T09:00:00Z")  # fmt: skip
    failed["failureInfo"] = {"type": "USER_BUILD_STEP", "detail": f"Build step failure: build step 1 failed: {said}"}
    failed["warnings"] = [{"text": f"deprecated flag near {said}", "priority": "WARNING"}]
    return failed


@pytest.fixture(params=["token", "basic", "consumer"])
def cloud_credential(request, bitbucket, monkeypatch) -> list[str]:
    """Bitbucket Cloud signed in with each kind of credential; the values that must never be sent."""
    app = bitbucket.app
    app.revoke_all()
    if request.param == "token":
        app.accept_token(OWN_TOKEN)
        document: dict[str, str] = {"token": OWN_TOKEN}
        secrets = forms(OWN_TOKEN)
    elif request.param == "basic":
        app.accept_basic(BASIC_USER, BASIC_PASSWORD)
        document = {"username": BASIC_USER, "password": BASIC_PASSWORD}
        secrets = [*forms(BASIC_PASSWORD), base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()]
    else:
        app.consumers[CONSUMER_ID] = CONSUMER_SECRET
        remember_basic(CONSUMER_ID, CONSUMER_SECRET)
        monkeypatch.setenv("BITBUCKET_OAUTH_TOKEN_URL", bitbucket.token_url)
        document = {"client_id": CONSUMER_ID, "client_secret": CONSUMER_SECRET}
        secrets = [*forms(CONSUMER_SECRET), base64.b64encode(f"{CONSUMER_ID}:{CONSUMER_SECRET}".encode()).decode()]
    remember_stored(document)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    return secrets


def test_no_form_of_the_functions_own_credential_reaches_bitbucket_cloud_from_any_field(
    bitbucket, google, cloud_credential, capsys
):
    deliver(build("WORKING", "b-0"))  # the first call: a consumer's token is issued
    secrets = [*cloud_credential, *(t for t in bitbucket.app._oauth_tokens for t in forms(t))]
    google.app.write_log("acme-ci", "b-1", {LABEL: [f"+ curl -H 'X-Auth: {s}' https://x" for s in secrets]})

    deliver(carrying(build, "b-1", "1" * 40, *secrets))

    [report] = bitbucket.app.shown_reports("acme", "webapp", "1" * 40)
    assert "Last lines of step 1 (deploy)" in report["details"]
    assert relay.masking.MASKED in report["details"]
    assert leaked(bitbucket.app.calls, secrets) == []
    out = capsys.readouterr().out
    assert [p for p in parts(secrets) if p in out] == []  # nor the function's own log lines


def test_no_form_of_a_data_center_credential_reaches_the_server_from_any_field(both, google, monkeypatch, capsys):
    password = "FyqXtWmhfSZjqToOE9h4zOoH9xoviNVo"
    both.app.accept_basic("ci-bot", password)
    document = [{"server": both.url, "username": "ci-bot", "password": password, "ca_certificate": both.ca}]
    remember_stored(document)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps(document))
    secrets = [*forms(password), base64.b64encode(f"ci-bot:{password}".encode()).decode()]
    google.app.write_log("acme-ci", "b-1", {LABEL: [f"login with {s}" for s in secrets]})

    deliver(carrying(lambda s, b, **k: dc_build(s, both, b, **k), "b-1", COMMIT, *secrets))

    [report] = both.app.shown_reports("PROJ", "repo", COMMIT)
    assert "Last lines of step 1 (deploy)" in report["details"]
    assert leaked(both.app.calls, secrets) == []
    out = capsys.readouterr().out
    assert [p for p in parts(secrets) if p in out] == []


def test_a_secret_substitution_is_masked_wherever_the_build_shows_it(bitbucket, google):
    remember_secret(SUBSTITUTED)
    google.app.write_log("acme-ci", "b-1", {LABEL: [f"deploying with {SUBSTITUTED}", "error: 401"]})
    failed = carrying(build, "b-1", COMMIT, SUBSTITUTED)
    failed["substitutions"]["_DEPLOY_TOKEN"] = SUBSTITUTED

    deliver(failed)

    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert "deploying with [masked]" in report["details"]
    assert leaked(bitbucket.app.calls, [SUBSTITUTED]) == []


def test_a_steps_command_shows_no_credential_in_the_status_or_report(bitbucket):
    bearer, password = "Mc-AhghItEiDFOBrFCsDB4UEMLVMdICP", "RBRyR6Qx6ryBDv11t9ZwxQamo_Warzdg"
    remember_secret(bearer, password)
    args = ["-H", f"Authorization: Bearer {bearer}", "--password", password, "https://api.example/deploy"]
    deliver(build("FAILURE", steps=[{**STEP, "args": args}]))

    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    shown = "Failed step: deploy (gcr.io/cloud-builders/curl): -H Authorization: Bearer [masked] --password [masked]"
    assert shown in report["details"]
    assert leaked(bitbucket.app.calls, [bearer, password]) == []


# --- the shapes: pure --------------------------------------------------------------------------------------------

SHAPED = "sXRdV1ZkK8310hXV-sLcoqgr8C6hwC4s"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjaS1ib3QiLCJleHAiOjE3OTk5OTk5OTl9"
    ".Tty6ehpJlpoH2ul2YS80YffoHmgtSU5a_J3qAVR_klm"
)


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [
        (f"Authorization: Basic {SHAPED}", SHAPED, "Authorization: Basic [masked]"),
        (f'curl -H "authorization: token {SHAPED}" https://x', SHAPED, "authorization: token [masked]"),
        (f"mysql --password {SHAPED} -h db", SHAPED, "--password [masked] -h db"),
        (f"docker login -u ci -p {SHAPED} registry.example", SHAPED, "-p [masked] registry"),
        (f"echo $PW | sshpass -p {SHAPED} ssh host", SHAPED, "sshpass -p [masked] ssh"),
        (f"curl -u ci:{SHAPED} https://x", SHAPED, "curl -u ci:[masked] https://x"),
        (f"git clone https://{SHAPED}@bitbucket.org/acme/x.git", SHAPED, "https://[masked]@bitbucket.org/acme/x.git"),
        (f"git clone https://:{SHAPED}@host/x.git", SHAPED, "https://[masked]@host/x.git"),
        (f"fetch https://ci:p@ss{SHAPED}@host/x", SHAPED, "https://[masked]@host/x"),
        (f"GET https://maps.example/api?key={SHAPED}&q=1", SHAPED, "?key=[masked]&q=1"),
        (f"GET https://acct.blob.example/c?sv=2024&sig={SHAPED}", SHAPED, "&sig=[masked]"),
        (f"https://storage.googleapis.com/b/o?X-Goog-Signature={SHAPED}", SHAPED, "X-Goog-Signature=[masked]"),
        (f"https://x/y#access_token={SHAPED}&type=bearer", SHAPED, "#access_token=[masked]"),
        (f"https://x/y;token={SHAPED}", SHAPED, ";token=[masked]"),
        (f"auth header {JWT} sent", JWT, "auth header [masked] sent"),
        (f"SLACK=xoxb-1234567890-{SHAPED}", f"xoxb-1234567890-{SHAPED}", "[masked]"),
        (f"Cookie: session={SHAPED}; theme=dark", SHAPED, "Cookie: [masked]"),
        (f"export API_KEY={SHAPED}", SHAPED, "API_KEY=[masked]"),
        (f"private_key: {SHAPED}", SHAPED, "private_key: [masked]"),
        (f'{{"client_secret": "{SHAPED}"}}', SHAPED, '"client_secret": "[masked]"'),
    ],
)
def test_each_shape_of_a_credential_is_masked_keeping_what_it_is(line, secret, kept):
    for text in (relay.masking.masked(line), relay.step_log.clean_lines([line])[0]):
        assert secret not in text
        assert kept in text


@pytest.mark.parametrize(
    "line",
    [
        "mkdir -p build/out",
        "Login Succeeded",
        "the token expired: run gcloud auth login",
        "git clone git@bitbucket.org:acme/webapp.git",
        "ssh://git@bitbucket.example:7999/PROJ/repo.git",
        "fetching https://bitbucket.org/acme/webapp/src/main/README.md?at=main",
        "key: value",
        "--- FAIL: TestLogin (0.00s)",
    ],
)
def test_cleaning_keeps_a_line_that_holds_no_secret(line):
    assert relay.step_log.clean_lines([line]) == [line]


def test_an_unterminated_private_key_hides_only_its_own_lines():
    lines = [
        "-----BEGIN OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ", "QyNTUxOQAAACB=",
        "Error: permission denied (publickey)", "deploy failed", "-----BEGIN RSA PRIVATE KEY----- MIIEpAIBAAKCAQEA",
    ]  # fmt: skip
    assert relay.step_log.clean_lines(lines) == [
        "[private key removed]",
        "Error: permission denied (publickey)",
        "deploy failed",
        "[private key removed]",
    ]
    assert relay.masking.masked(
        '{"key": "-----BEGIN PRIVATE KEY-----\\nMIIEv\\n-----END PRIVATE KEY-----", "id": 7}'
    ) == ('{"key": "[masked]", "id": 7}')


def test_a_known_secret_is_masked_whole_though_it_holds_another_and_from_six_characters():
    short, long = "Zq81xK", "Zq81xKf797a180fb83e71b"
    assert relay.step_log.clean_lines([f"a {long} b {short} c Zq81x"], secrets=[short, long]) == [
        "a [masked] b [masked] c Zq81x"
    ]


def test_a_tab_is_spaces_so_words_stay_apart():
    assert relay.step_log.clean_lines(["FAIL\tgithub.com/acme/webapp/auth\t0.012s"]) == [
        "FAIL    github.com/acme/webapp/auth    0.012s"
    ]


def test_a_text_is_masked_within_its_window_and_nothing_past_it_is_kept():
    line = "token " + "a." * 128_000 + SHAPED
    [cleaned] = relay.step_log.clean_lines([line])
    assert len(cleaned) == relay.step_log.LOG_LINE_MAX
    assert len(relay.masking.masked(line)) <= relay.decoding.MASK_WINDOW


def test_a_body_holding_the_functions_own_credential_is_masked_as_it_is_sent(bitbucket):
    """The last guard, below every text's own masking: whatever reaches a body (a field no mask knew of) is sent
    without the credential."""
    warm = relay.warm.warm_instance()
    repository = relay.repository.Repository("acme", "webapp")
    body = {"key": "k", "state": "FAILED", "name": "n", "url": "https://x", "description": f"a {TOKEN} b"}
    warm.reporter.cloud.write(repository, COMMIT, body)

    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["description"] == "a [masked] b"


# --- no part of a secret: at a cut, across two lines, in base64, on a cold instance (an attack's findings) ---------


def test_a_private_key_printed_with_a_prefix_on_each_line_is_removed_to_its_end():
    body = "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi6Z5bWp8Kd1mQhXb0OHcA1mE0r7X2o5Zl9"
    lines = ["#7 [4/5] RUN cat /run/secrets/deploy_key", "#7 0.312 -----BEGIN RSA PRIVATE KEY-----",
             f"#7 0.312 {body}", "#7 0.313 QyNTUxOQ==", "#7 0.313 -----END RSA PRIVATE KEY-----",
             "#7 ERROR: process did not complete"]  # fmt: skip
    assert relay.step_log.clean_lines(lines) == [lines[0], "[private key removed]", lines[-1]]
    unterminated = [*lines[:4], "#7 ERROR: process did not complete"]
    assert relay.step_log.clean_lines(unterminated) == [lines[0], "[private key removed]", lines[-1]]


@pytest.mark.parametrize(
    "line",
    [
        "\x1b[0m" * 100 + "x" * 90 + OWN_TOKEN,  # the cut falls in the token; removing escape codes brings it near
        "\x00" * 480 + "deploy " + OWN_TOKEN,
        "y" * 4090 + OWN_TOKEN,  # the first cut, of the raw line
    ],
)
def test_a_credential_cut_by_a_lines_window_shows_no_part_of_itself(line):
    [cleaned] = relay.step_log.clean_lines([line], [OWN_TOKEN])
    assert [p for p in parts([OWN_TOKEN]) if p in cleaned] == []


def test_a_credential_cut_by_a_texts_window_shows_no_part_once_its_spaces_are_collapsed():
    known = relay.masking.known_secrets([OWN_TOKEN])
    for text in ("t" + " " * 500 + OWN_TOKEN, "ATATT" + " " * 497 + "ATATT3xFfGF0Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4"):
        shown = relay.text.plain(relay.masking.masked(text, known))
        assert [p for p in parts([OWN_TOKEN, text.split()[-1]]) if p in shown] == []


def test_a_credential_split_across_two_lines_is_masked_in_both():
    cleaned = relay.step_log.clean_lines(["export TOKEN=" + OWN_TOKEN[:16], OWN_TOKEN[16:] + " done"], [OWN_TOKEN])
    assert cleaned == ["export TOKEN=[masked]", "[masked] done"]


def test_a_credential_folded_onto_lines_of_its_own_is_masked_in_each():
    """`fold -w 16`, or a terminal's width: each line holds nothing but a part of the secret."""
    assert relay.step_log.clean_lines([OWN_TOKEN[:16], OWN_TOKEN[16:]], [OWN_TOKEN]) == ["[masked]", "[masked]"]


def test_a_part_of_a_credential_at_a_lines_edge_is_masked_from_eight_characters_to_all_but_one():
    ends = [f"part {OWN_TOKEN[:size]}" for size in (7, 8, len(OWN_TOKEN) - 1)]
    begins = [f"{OWN_TOKEN[-size:]} part" for size in (7, 8, len(OWN_TOKEN) - 1)]
    assert relay.step_log.clean_lines([*ends, *begins], [OWN_TOKEN]) == [
        ends[0], "part [masked]", "part [masked]", begins[0], "[masked] part", "[masked] part"
    ]  # fmt: skip


def test_a_window_keeps_a_text_that_fits_and_drops_only_the_word_it_cuts():
    window = relay.masking.MASK_WINDOW
    fits = "ab " * ((window - 10) // 3) + "x" * (window - 3 * ((window - 10) // 3))
    assert len(fits) == window
    assert relay.masking.masked(fits) == fits  # nothing cut: its last word stays
    between = "ab " * (window // 3) + "cd" * 10
    assert relay.masking.masked(between)[: window - 3] == between[: window - 3]
    cut = "ab " * (window // 3 - 1) + "abc " + "partOfAWordTheCutFallsIn"
    assert relay.masking.masked(cut) == cut[: window - window % 3 + 1]  # up to the space before the cut word


@pytest.mark.parametrize("prefix", [b"", b":", b"x:"], ids=["aligned", "one byte before", "two bytes before"])
def test_a_credential_in_base64_is_masked_whatever_precedes_it_and_from_twelve_characters(prefix):
    for secret in (OWN_TOKEN, OWN_TOKEN[:12]):
        for suffix in (b"", b"\n"):
            encoded = base64.b64encode(prefix + secret.encode() + suffix).decode()
            shown = relay.masking.masked(f"auth {encoded}", relay.masking.known_secrets([secret]))
            assert relay.masking.MASKED in shown, (secret, suffix)
            assert len(shown) - len(relay.masking.MASKED) <= len("auth ") + 4 + 4, (secret, suffix)


def test_a_credential_holding_a_space_and_a_slash_is_masked_url_encoded_either_way():
    secret = "kT7 vQ2/xP9wL4mZ"  # a password may hold both
    for encoded in (quote(secret, safe=""), quote_plus(secret)):
        assert relay.masking.masked(f"sent {encoded}", relay.masking.known_secrets([secret])) == "sent [masked]"


def test_a_credential_in_base64_is_masked_at_any_alignment():
    encoded = base64.b64encode(OWN_TOKEN.encode()).decode()
    docker = base64.b64encode(f"x-token-auth:{OWN_TOKEN}".encode()).decode()
    cleaned = relay.step_log.clean_lines([f"+ echo {encoded}", f'"auth": "{docker}"', f"in base64 {encoded}."],
                                         [OWN_TOKEN])  # fmt: skip
    assert cleaned == ["+ echo [masked]", '"auth": "[masked]"', "in base64 [masked]."]


@pytest.mark.parametrize(
    "line",
    [
        "src/auth/token.c:12:5: error: expected ';' before '}' token",
        "FAILED tests/test_tokens.py::test_split - AssertionError: assert 1 == 2",
        "    tokenizer_test.go:123: expected 3 got 4",
        "  at Object.<anonymous> (src/password.test.js:12:5)",
    ],
)
def test_a_files_line_is_kept_though_the_files_name_holds_a_secret_word(line):
    assert relay.step_log.clean_lines([line]) == [line]


def test_a_builds_secret_substitutions_beyond_the_first_twenty_are_not_looked_for():
    subs = {f"_TOKEN_{n}": f"{OWN_TOKEN}{n:05}" for n in range(50_000)}
    assert len(relay.decoding.substituted_secrets(build("FAILURE", substitutions=subs))) == 20


def test_a_cold_instance_logs_no_credential_of_its_own_that_a_skipped_build_names(bitbucket, monkeypatch, capsys):
    """The first event of an instance reads the credentials (from the environment or a file: no client needed)
    before anything is said of the build."""
    bitbucket.app.accept_token(OWN_TOKEN)
    remember_stored({"token": OWN_TOKEN})
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": OWN_TOKEN}))
    skipped = build("SUCCESS", "b-1", source="git")
    skipped["source"]["gitSource"]["url"] = f"https://example.com/{OWN_TOKEN}/x.git"
    deliver(skipped)
    assert [p for p in parts([OWN_TOKEN]) if p in capsys.readouterr().out] == []


def test_a_weak_password_of_the_function_never_rewrites_what_routes_a_status(bitbucket, monkeypatch):
    """Only what a build shows is masked: a branch that holds the function's (weak) password is still the branch."""
    bitbucket.app.revoke_all()
    bitbucket.app.basic["ci-bot"] = "fish42"  # not remembered: a weak password is prose, which the guard cannot tell
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"username": "ci-bot", "password": "fish42"}))
    deliver(build("WORKING", "b-1", branch="feature/fish42-login"))
    deliver(build("SUCCESS", "b-1", branch="feature/fish42-login"))
    [status] = bitbucket.app.shown("acme", "webapp", COMMIT)
    assert status["refname"] == "feature/fish42-login"
