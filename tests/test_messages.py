"""What reaches the function: the two entry points, bad input, and an import that stays light."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cloudevents.http import CloudEvent

import main
import relay.config
import relay.decoding
import relay.errors
import relay.event
import relay.warm
from standins import remember_secret
from standins.builds import COMMIT, SAMPLES, Context, background_event, build, encode, now, push_body
from tests.conftest import TOKEN, log_lines, shown

ROOT = Path(__file__).resolve().parents[1]
GOOGLE_MODULES = ("google.cloud", "grpc", "google.protobuf", "google.api_core")


def cloud_event(data: dict) -> CloudEvent:
    attributes = {
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": "//pubsub.googleapis.com/projects/acme-ci/topics/cloud-builds",
        "time": now(),
    }
    return CloudEvent(attributes, data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "the message has no data"),
        ("", "the message has no data"),
        ("%%% not base64 %%%", "not valid base64"),
        (base64.b64encode(b"\xff\xfe not utf-8").decode(), "not JSON"),
        (encode(b"{not json"), "not JSON"),
        (encode(b"[1, 2]"), "a JSON list, not a Build object"),
        (encode(b'"text"'), "a JSON str, not a Build object"),
        (encode({"status": "SUCCESS"}), "the Build has no 'id'"),
        (encode({"id": "b-1"}), "the Build has no 'status'"),
        (encode({"id": 7, "status": "SUCCESS"}), "the Build has no 'id'"),
        (12345, "the message data is a int, not base64 text"),
        (encode(b'{"id": "b-1", "status": "SUCCESS", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), "deeper"),
        (encode(b'{"id": "b-1", "status": "SUCCESS", "x": ' + b"[" * 40 + b"]" * 40 + b"}"), "deeper than 32"),
    ],
)
def test_input_that_is_not_a_build_is_logged_with_the_reason_and_acknowledged(bitbucket, capsys, data, reason):
    main.build_status({"data": data}, Context())
    main.build_status_cloudevent(cloud_event({"message": {"data": data}}))
    lines = log_lines(capsys.readouterr().out)
    assert len(lines) == 2
    for line in lines:
        assert line["severity"] == "WARNING"
        assert reason in line["message"]
    assert bitbucket.app.calls == []


def test_events_without_a_message_are_acknowledged(bitbucket, capsys):
    main.build_status("not a dict", Context())
    main.build_status_cloudevent(cloud_event({"subscription": "s"}))
    assert [line["severity"] for line in log_lines(capsys.readouterr().out)] == ["WARNING", "WARNING"]
    assert bitbucket.app.calls == []


def test_both_entry_points_post_the_same_status(bitbucket):
    main.build_status(background_event(build("SUCCESS", "b-1")), Context())
    main.build_status_cloudevent(cloud_event(push_body(build("SUCCESS", "b-2", commit="a" * 40))))
    assert shown(bitbucket)[0]["description"] == shown(bitbucket, commit="a" * 40)[0]["description"]


@pytest.mark.parametrize(
    ("envelope", "signature", "path"),
    [
        ("background-event", "event", "/"),
        ("pubsub-push", "event", "/"),
        ("pubsub-push", "event", "/projects/louis-garman-ci/topics/cloud-builds"),
        ("background-event", "cloudevent", "/"),
        ("pubsub-push", "cloudevent", "/"),
        ("pubsub-push", "cloudevent", "/projects/louis-garman-ci/topics/cloud-builds"),
        ("cloudevent-structured", "cloudevent", "/"),  # a structured CloudEvent only reaches cloudevent functions
    ],
)
def test_the_functions_framework_delivers_each_envelope_to_the_function(bitbucket, capsys, envelope, signature, path):
    """The published envelopes as they are (published now rather than in 2019, older than any age cutoff), through
    the same framework the runtime uses. Two of them name the topic of a made-up project, `my-project`, while their
    Build is of `louis-garman-ci`: a delivery speaks for its topic's project, so those are refused; the push envelope
    names no topic unless its path does."""
    from functions_framework import create_app

    bitbucket.app.repositories = {"garman/webapp"}
    target = "build_status" if signature == "event" else "build_status_cloudevent"
    client = create_app(target, str(ROOT / "main.py"), signature).test_client()
    body = (
        (SAMPLES / "envelopes" / f"{envelope}.json").read_bytes().replace(b"2019-08-21T10:00:03.000Z", now().encode())
    )
    content_type = "application/cloudevents+json" if envelope == "cloudevent-structured" else "application/json"
    response = client.post(path, data=body, content_type=content_type)
    assert response.status_code == 200
    shown_now = bitbucket.app.shown("garman", "webapp", "65ca6a99a2573f0f1ff5dc93f78a77966248ea2d")
    if envelope == "pubsub-push":
        [status] = shown_now
        assert (status["state"], status["description"], status["refname"]) == ("INPROGRESS", "Running", "feature/fish")
    else:
        assert shown_now == []
        [line] = [line for line in log_lines(capsys.readouterr().out) if line["message"].startswith("Refused")]
        assert line["severity"] == "WARNING"
        assert "claims project 'louis-garman-ci' but was published to project 'my-project''s topic" in line["message"]


def test_the_envelopes_published_in_2019_are_too_old_to_apply_by_default(bitbucket, capsys):
    envelope = json.loads((SAMPLES / "envelopes" / "background-event.json").read_text())
    main.build_status(envelope["data"], Context(envelope["context"]["timestamp"]))
    [line] = log_lines(capsys.readouterr().out)
    assert "older than MAX_EVENT_AGE_SECONDS" in line["message"]
    assert line["build_id"] == "aeccd2ef-f51a-4a44-8e2e-0de2609ce367"
    assert bitbucket.app.calls == []


def _loaded_by(code: str, env: dict[str, str]) -> list[str]:
    """Modules a fresh interpreter has after `code` that it did not have at start-up."""
    script = (
        f"import sys, json\nat_start = set(sys.modules)\n{code}\nprint(json.dumps(sorted(set(sys.modules) - at_start)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_importing_main_loads_no_google_client(tmp_path):
    modules = _loaded_by("import main", {"PATH": "/usr/bin:/bin"})
    assert [m for m in modules if m.startswith(GOOGLE_MODULES)] == []


# What only some events need loads with the first that needs it: test results (their module and the XML parsers) with
# a final state, the failed step's lines (their cleaning, matchers and annotations) with a failed build.
TEST_RESULTS = ("relay.junit", "junitparser", "defusedxml", "xml.etree")
XML_PARSERS = ("junitparser", "defusedxml", "xml.etree")
STEP_LINES = ("relay.step_log", "relay.annotations")


def _loaded_by_import_then_event(event: dict) -> tuple[list[str], list[str]]:
    """The modules a fresh interpreter loads with `import main`, then with handling `event`, in the environment the
    fixtures set (the stand-ins)."""
    script = (
        "import sys, json\nat_start = set(sys.modules)\nimport main\nimported = set(sys.modules)\n"
        f"main.build_status({event!r}, None)\n"
        "print(json.dumps([sorted(imported - at_start), sorted(set(sys.modules) - imported)]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    by_import, by_event = json.loads(out.stdout.splitlines()[-1])
    return by_import, by_event


def test_importing_main_loads_neither_test_results_nor_the_failed_steps_lines():
    modules = _loaded_by("import main", {"PATH": "/usr/bin:/bin"})
    assert "relay.event" in modules
    assert [m for m in modules if m.startswith(TEST_RESULTS + STEP_LINES)] == []


def test_an_in_progress_event_loads_neither_test_results_nor_the_failed_steps_lines(bitbucket, monkeypatch):
    monkeypatch.setenv("TEST_REPORT_BUCKETS", "acme-test-reports")  # a deployment that reads builds' test files
    by_import, by_event = _loaded_by_import_then_event(background_event(build("WORKING")))
    assert [s["state"] for s in shown(bitbucket)] == ["INPROGRESS"]
    assert [m for m in by_import + by_event if m.startswith(TEST_RESULTS + STEP_LINES)] == []


def test_a_failed_builds_final_event_loads_its_steps_lines_when_it_needs_them_and_no_xml_parser_without_test_files(
    bitbucket, google, monkeypatch
):
    monkeypatch.setenv("TEST_REPORT_BUCKETS", "acme-test-reports")
    steps = [{"id": "unit-tests", "name": "python:3.12", "args": ["pytest"], "status": "FAILURE", "exitCode": 1}]
    lines = ["E       assert 1 == 2", "FAILED tests/test_sum.py::test_sum - assert 1 == 2", "1 failed in 0.01s"]
    google.app.write_log("acme-ci", "b-1", {'Step #0 - "unit-tests"': lines})
    by_import, by_event = _loaded_by_import_then_event(background_event(build("FAILURE", "b-1", steps=steps)))
    [report] = bitbucket.app.shown_reports("acme", "webapp", COMMIT)
    assert report["details"].endswith("Last lines of step 0 (unit-tests):\n" + "\n".join(lines))
    assert {"relay.step_log", "relay.annotations", "relay.junit"} <= set(by_event)  # loaded by this event, not before
    assert [m for m in by_import + by_event if m.startswith(XML_PARSERS)] == []


def test_a_skipped_event_loads_no_google_client_even_with_the_bucket_source(tmp_path):
    skipped = encode({"id": "b-1", "status": "SUCCESS", "source": {"storageSource": {}}})
    code = f"import main\nmain.build_status({{'data': {skipped!r}}}, None)"
    env = {
        "PATH": "/usr/bin:/bin",
        "SECRETS_BUCKET": "b",
        "SECRETS_OBJECT": "o",
        "KMS_CRYPTO_KEY_ID": "projects/p/locations/l/keyRings/r/cryptoKeys/k",
    }
    modules = _loaded_by(code, env)
    assert "main" in modules
    assert [m for m in modules if m.startswith(GOOGLE_MODULES)] == []


# --- publish times: as Cloud Build and Pub/Sub write them, through both entry points ---


@pytest.mark.parametrize(
    "text",
    ["2026-11-27T09:00:05Z", "2026-11-27T09:00:05z", "2026-11-27t09:00:05.123456789z", "2026-11-27T09:00:05.1+00:00"],
)
def test_rfc3339_times_with_z_or_nine_fraction_digits_parse(text):
    parsed = relay.decoding.parse_time(text)
    assert (parsed.year, parsed.second, parsed.utcoffset().total_seconds()) == (2026, 5, 0)


def two_hours_ago(suffix: str = "Z") -> str:
    return (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="microseconds").replace("+00:00", suffix)


def deliver_2nd_gen(b: dict, publish_time: str) -> None:
    main.build_status_cloudevent(cloud_event(push_body(b, publish_time=publish_time)))


@pytest.mark.parametrize("signature", ["1st gen", "2nd gen"])
@pytest.mark.parametrize("suffix", ["Z", "z", "789z"])  # "789z": nine fraction digits
def test_the_age_cutoff_applies_to_either_entry_point_and_any_publish_time_format(
    bitbucket, monkeypatch, capsys, signature, suffix
):
    monkeypatch.setenv("MAX_EVENT_AGE_SECONDS", "3600")
    published = two_hours_ago(suffix)
    if signature == "1st gen":
        main.build_status(background_event(build("SUCCESS")), Context(published))
    else:
        deliver_2nd_gen(build("SUCCESS"), published)
    assert bitbucket.app.calls == []
    [line] = log_lines(capsys.readouterr().out)
    assert "older than MAX_EVENT_AGE_SECONDS" in line["message"]


def test_the_stale_message_rule_applies_to_the_2nd_gen_entry_point(bitbucket, new_instance):
    deliver_2nd_gen(build("SUCCESS", "run-2"), now())
    new_instance()  # the late message of an older run reaches another instance
    deliver_2nd_gen(build("WORKING", "run-1"), (datetime.now(UTC) - timedelta(minutes=30)).isoformat())
    [status] = shown(bitbucket)
    assert (status["state"], "run-2" in status["url"]) == ("SUCCESSFUL", True)


def test_a_publish_time_that_does_not_parse_is_logged_not_silently_ignored(bitbucket, capsys):
    deliver_2nd_gen(build("SUCCESS"), "yesterday at noon")
    warning, posted = log_lines(capsys.readouterr().out)
    assert warning["severity"] == "WARNING"
    assert "'yesterday at noon' does not parse" in warning["message"]
    assert "age cutoff" in warning["message"]
    assert posted["message"].startswith("Posted SUCCESSFUL")


def test_the_first_event_with_a_credentials_file_loads_no_google_client(bitbucket, tmp_path):
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"token": TOKEN}))
    event = background_event(build("SUCCESS"))
    code = f"import main\nmain.build_status({event!r}, None)"
    env = {
        "PATH": "/usr/bin:/bin",
        "BITBUCKET_CREDENTIALS_FILE": str(credentials),
        "BITBUCKET_API_URL": bitbucket.api_url,
    }
    modules = _loaded_by(code, {**env, "PYTHONPATH": str(ROOT)})
    assert [s["state"] for s in shown(bitbucket)] == ["SUCCESSFUL"]  # the event was handled, the status posted
    assert [m for m in modules if m.startswith(GOOGLE_MODULES)] == []


def test_an_error_line_carries_what_error_reporting_groups_it_by_and_a_warning_does_not(bitbucket, capsys, monkeypatch):
    monkeypatch.setenv("K_SERVICE", "bitbucket-build-status")
    monkeypatch.setenv("K_REVISION", "bitbucket-build-status-00007-xyz")
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", "not json")
    with pytest.raises(relay.errors.ConfigurationError):
        main.build_status(background_event(build("SUCCESS")), Context())
    main.build_status({"data": "not base64!"}, Context())
    error, warning = log_lines(capsys.readouterr().out)
    assert error["severity"] == "ERROR"
    assert error["@type"] == "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"
    assert error["serviceContext"] == {
        "service": "bitbucket-build-status",
        "version": "bitbucket-build-status-00007-xyz",
    }
    assert warning["severity"] == "WARNING"
    assert "@type" not in warning


def test_an_unexpected_exception_logs_its_stack_trace_once_and_not_the_events_data(bitbucket, capsys, monkeypatch):
    def broken(build: dict, config: relay.config.Config, secrets: object = ()) -> None:
        raise KeyError(build["substitutions"]["TRIGGER_NAME"])

    monkeypatch.setattr(relay.event, "translate", broken)
    with pytest.raises(RuntimeError, match="its stack trace is logged above"):
        main.build_status(background_event(build("SUCCESS", trigger_name="secret-trigger-x")),
                          Context())  # fmt: skip
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "ERROR"
    assert line["@type"].endswith("ReportedErrorEvent")
    assert "Traceback (most recent call last):" in line["message"]
    assert 'in broken\n    raise KeyError(build["substitutions"]["TRIGGER_NAME"])\nKeyError' in line["message"]
    assert "secret-trigger-x" not in line["message"]


# --- no raw value from a build in a log line ---------------------------------------------------------

# Stands for an access token a build's author pasted into a value; in lower case, as a commit or a host is logged.
LEAKED = "36ll15twg4jgjrduzm15t2am6i940oqb"
# In a branch or a trigger's name it is also what Bitbucket is sent (the status's refname and name), which the
# session's secret guard would see in the stand-in's bodies: those cases carry a secret of their own, checked here in
# the log only.
SENT = "nEZP51DWr-tapLbH0PWH4GHh_r-OBNeo"


def _git(url: str) -> dict:
    b = build("SUCCESS", source="git")
    b["source"]["gitSource"]["url"] = url
    return b


def _webhook(repo: str, **substitutions: str) -> dict:
    b = build("SUCCESS", source="webhook", repo=repo)
    b["substitutions"].update(substitutions)
    return b


def _connected(name: str) -> dict:
    b = build("SUCCESS", source="connection")
    b["source"]["connectedRepository"]["repository"] = name
    return b


def _mirror(name: str) -> dict:
    b = build("SUCCESS", source="mirror")
    b["source"]["repoSource"]["repoName"] = b["sourceProvenance"]["resolvedRepoSource"]["repoName"] = name
    return b


def _with(**fields: str) -> dict:
    return {**build("SUCCESS"), **fields}


CONNECTION = "projects/acme-ci/locations/europe-west1/connections/bb/repositories"
VALUES_WITH_A_SECRET = {
    "a clone URL's query": _git(f"https://bitbucket.org/acme/webapp.git?access_token={LEAKED}"),
    "a clone URL's fragment": _git(f"https://bitbucket.org/acme/webapp.git#access_token={LEAKED}"),
    "a clone URL's parameters": _git(f"https://bitbucket.org/acme/webapp.git;token={LEAKED}"),
    "an scp-like clone URL's query": _git(f"git@bitbucket.org:acme/webapp.git?access_token={LEAKED}"),
    "an ssh clone URL's query": _git(f"ssh://git@bitbucket.org/acme/webapp.git?access_token={LEAKED}"),
    "an ssh clone URL's host": _git(f"ssh://bb.example?access_token={LEAKED}/PROJ/repo.git"),
    "a Data Center clone URL's query": _git(f"https://bb.example/scm/PROJ/repo.git?access_token={LEAKED}"),
    "a clone URL's password": _git(f"https://ci:{LEAKED}@gitlab.example/acme/webapp.git"),
    "_BITBUCKET_REPO's password": _webhook(f"https://ci:{LEAKED}@bitbucket.org/acme/webapp"),
    "_BITBUCKET_REPO's query": _webhook(f"acme/webapp?access_token={LEAKED}"),
    "_BITBUCKET_SERVER's password": _webhook("PROJ/repo", _BITBUCKET_SERVER=f"http://ci:{LEAKED}@bb.example"),
    "_BITBUCKET_COMMIT": _webhook("acme/webapp", _BITBUCKET_COMMIT=f"65ca6a9?token={LEAKED}"),
    "_BITBUCKET_BRANCH": _webhook("acme/webapp", _BITBUCKET_BRANCH=f"main?token={SENT}"),
    "a connected repository's name": _connected(f"{CONNECTION}/webapp?access_token={LEAKED}"),
    "a mirror's repoName": _mirror(f"bitbucket_acme_webapp?access_token={LEAKED}"),
    "another mirror's repoName": _mirror(f"github_acme_webapp?access_token={LEAKED}"),
    "a status": _with(status=f"DONE?token={LEAKED}"),
    "a build id": _with(id=f"b-1?token={LEAKED}"),
    "a claimed project": _with(projectId=f"acme-ci?token={LEAKED}"),
    "a trigger name": build("SUCCESS", trigger_id=None, trigger_name=f"deploy?token={SENT}"),
}


@pytest.mark.parametrize("value", VALUES_WITH_A_SECRET.values(), ids=VALUES_WITH_A_SECRET.keys())
def test_a_secret_in_any_value_from_a_build_reaches_no_log_line_nor_resyncs_output(bitbucket, capsys, value):
    """Every value from a build reaches a log without its user info, query, fragment or parameters: the function's
    log line and its fields, and the message resync prints for the same build (relay.event.report_build's result)."""
    remember_secret(LEAKED)
    main.build_status(background_event(value), Context())
    fields = relay.event.log_fields(value)
    result = relay.event.report_build(value, now(), fields, "acme-ci", relay.warm.warm_instance())
    lines = log_lines(capsys.readouterr().out)
    assert lines
    said = json.dumps([lines, result.message, fields])
    assert LEAKED not in said
    assert SENT not in said


def test_a_publish_time_that_does_not_parse_is_logged_without_its_query(bitbucket, capsys):
    remember_secret(LEAKED)
    main.build_status(background_event(build("SUCCESS")), Context(f"yesterday?token={LEAKED}"))
    assert LEAKED not in capsys.readouterr().out


@pytest.mark.parametrize("field", ["status", "id", "projectId"])
def test_a_value_of_a_million_characters_gives_a_short_log_line(bitbucket, capsys, field):
    main.build_status(background_event(_with(**{field: "X" * 1_000_000})), Context())
    lines = capsys.readouterr().out.splitlines()
    assert lines
    assert all(len(line) < 1000 for line in lines), [len(line) for line in lines]


# --- severity: a build's bad input is a WARNING, never an ERROR that pages whoever runs the relay -------------

BAD_INPUT = {
    "a repository name that is not one": _webhook("acme/../admin"),
    "a clone URL's repository name that is not one": _git("https://bitbucket.org/acme/web%20app.git"),
    "a mirror's name that splits into no repository": _mirror("bitbucket_acme"),
    "a commit that is not 40 hex": _webhook("acme/webapp", _BITBUCKET_COMMIT="65ca6a9"),
    "a connected repository that is not a resource name": _connected("acme/webapp"),
    "a _BITBUCKET_SERVER that is not https": _webhook("PROJ/repo", _BITBUCKET_SERVER="http://bb.example/bitbucket"),
    "a status of no Bitbucket state": _with(status="STATUS_UNKNOWN"),
}


@pytest.mark.parametrize("bad", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_a_builds_bad_input_is_a_warning_that_pages_no_one(bitbucket, capsys, bad):
    main.build_status(background_event(bad), Context())  # acknowledged: nothing raised
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "WARNING", line
    assert "@type" not in line
    assert "serviceContext" not in line
    assert bitbucket.app.calls == []


def test_a_number_setting_that_is_infinite_is_a_configuration_error_not_an_unexpected_one(
    bitbucket, capsys, monkeypatch
):
    monkeypatch.setenv("LOG_EXCERPT_LINES", "inf")
    with pytest.raises(relay.errors.ConfigurationError):
        main.build_status(background_event(build("SUCCESS")), Context())
    [line] = log_lines(capsys.readouterr().out)
    assert line["severity"] == "ERROR"
    assert line["message"].startswith("Configuration error: LOG_EXCERPT_LINES must be a whole number of lines from 0")


def test_a_build_naming_a_repository_its_credential_may_not_write_pages_no_one(bitbucket, monkeypatch, capsys):
    """A token of one repository and an entry serving any: a build naming another (_BITBUCKET_REPO) is refused 403,
    a WARNING; the same refusal for a trigger's own repository would be the operator's to mend (an ERROR)."""
    token = "webapp-only-Qm3ZtK9vR2pX8sLw4NyB7cJd"
    bitbucket.app.revoke_all()
    bitbucket.app.accept_token(token, {"acme/webapp"})
    remember_secret(token)
    monkeypatch.setenv("BITBUCKET_CREDENTIALS", json.dumps({"token": token}))
    deliver_to = {"_BITBUCKET_REPO": "acme/api", "COMMIT_SHA": "a" * 40}
    main.build_status(background_event(build("SUCCESS", "b-1", substitutions=deliver_to)), Context())
    submitted = build("SUCCESS", "b-2", repo="acme/api", trigger_id=None, trigger_name=None)
    main.build_status(background_event(submitted), Context())
    lines = log_lines(capsys.readouterr().out)
    assert [(line["severity"], "403" in line["message"]) for line in lines] == [("WARNING", True), ("WARNING", True)]
