"""From a Build to the status to post: plain functions, no I/O, no mocks."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

import relay.annotations
import relay.bitbucket_cloud
import relay.bitbucket_data_center
import relay.config
import relay.errors
import relay.junit
import relay.repository
import relay.states
import relay.status
import relay.step_log
import relay.text
import relay.translate
from standins.builds import COMMIT, HOSTILE, HOSTILE_FIELDS, TRIGGER_ID, build, hostile_build, sample
from tests.test_fuzz import ALLOWED_PATH, SERVER_PATH

CONFIG = relay.config.Config()
ROOT = Path(__file__).resolve().parents[1]
CLOUD = relay.bitbucket_cloud.BitbucketCloud(api_url="https://api.bitbucket.example/2.0", client=None)  # its body alone


def update_for(b: dict) -> relay.translate.Update:
    result = relay.translate.translate(b, CONFIG)
    assert isinstance(result, relay.translate.Update), result
    return result


def skip_for(b: dict, config: relay.config.Config = CONFIG) -> relay.errors.Skip:
    result = relay.translate.translate(b, config)
    assert isinstance(result, relay.errors.Skip), result
    return result


# --- the real samples -------------------------------------------------------


def test_mirror_sample_reports_success_on_the_mirrored_repository_commit_and_branch():
    update = update_for(sample("bitbucket-mirror-branch"))
    assert update.target.candidates == (relay.repository.Repository("garman", "webapp"),)
    assert update.target.commit == "65ca6a99a2573f0f1ff5dc93f78a77966248ea2d"
    assert CLOUD.body(update.status) == {
        "key": "2bceb582-3141-44bf-b444-5640cbcaecc5",
        "state": "SUCCESSFUL",
        "name": "Cloud Build",
        "url": "https://console.cloud.google.com/gcr/builds/aeccd2ef-f51a-4a44-8e2e-0de2609ce367?project=292927648743",
        "description": "Succeeded in 32s",
        "refname": "feature/fish",
    }


def test_github_app_sample_is_skipped_because_its_source_is_a_bucket():
    skip = skip_for(sample("github-app-storage-source"))
    assert skip.severity == "INFO"
    assert "storage bucket" in skip.reason


def test_trigger_sample_without_repository_evidence_is_skipped():
    skip = skip_for(sample("trigger-substitutions-partial"))
    assert skip.reason == "the build names no Bitbucket repository"


# --- where the repository, commit and branch come from ---------------------------


@pytest.mark.parametrize("source", ["connection", "git", "mirror", "webhook"])
def test_every_bitbucket_source_gives_repository_commit_and_branch(source):
    update = update_for(build("WORKING", source=source))
    assert update.target.candidates == (relay.repository.Repository("acme", "webapp"),)
    assert update.target.commit == COMMIT
    assert update.status.refname == "feature/fish"


def test_substitutions_win_over_every_other_source():
    b = build("SUCCESS", source="git", repo="acme/from-git")
    b["substitutions"].update(
        _BITBUCKET_REPO="acme/chosen", _BITBUCKET_COMMIT="a" * 40, _BITBUCKET_BRANCH="release/1.0"
    )
    update = update_for(b)
    assert update.target.candidates == (relay.repository.Repository("acme", "chosen"),)
    assert (update.target.commit, update.status.refname) == ("a" * 40, "release/1.0")


def test_git_source_falls_back_to_the_resolved_revision_and_accepts_ssh_urls():
    b = build("SUCCESS", source="git")
    del b["substitutions"]["COMMIT_SHA"]
    b["source"]["gitSource"] = {"url": "git@bitbucket.org:acme/webapp.git", "revision": "main"}
    b["sourceProvenance"] = {"resolvedGitSource": {"revision": COMMIT}}
    update = update_for(b)
    assert update.target.candidates == (relay.repository.Repository("acme", "webapp"),)
    assert update.target.commit == COMMIT


def test_mirror_name_with_underscores_tries_every_split_first_underscore_first():
    update = update_for(build("WORKING", source="mirror", repo="my_team/web_app"))
    assert update.target.candidates == (
        relay.repository.Repository("my", "team_web_app"),
        relay.repository.Repository("my_team", "web_app"),
        relay.repository.Repository("my_team_web", "app"),
    )
    assert update.target.mirror == "bitbucket_my_team_web_app"


def test_connection_build_falls_back_to_the_resolved_connected_revision():
    b = build("WORKING", source="connection")
    del b["substitutions"]["COMMIT_SHA"]
    b["sourceProvenance"] = {"resolvedConnectedRepository": {"revision": COMMIT.upper()}}
    assert update_for(b).target.commit == COMMIT


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"source": {"repoSource": {"repoName": "github_acme_webapp"}}}, "is not a Bitbucket mirror"),
        ({"source": {"gitSource": {"url": "https://github.com/acme/webapp.git"}}}, "is not on bitbucket.org"),
        ({"source": {"gitSource": {"url": "https://gitlab.com/acme/webapp.git"}}}, "is not on bitbucket.org"),
        ({"source": {"storageSource": {"bucket": "b", "object": "o.tgz"}}}, "storage bucket"),
    ],
)
def test_builds_from_elsewhere_are_skipped_with_the_reason(change, reason):
    b = build("SUCCESS", source="none")
    b.update(change)
    skip = skip_for(b)
    assert skip.severity == "INFO"
    assert reason in skip.reason


def test_connected_github_repository_is_skipped():
    b = build("SUCCESS", source="connection")
    b["substitutions"]["_HEAD_REPO_URL"] = "https://github.com/acme/webapp"
    assert skip_for(b).reason == "the build's connected repository is not on Bitbucket"


@pytest.mark.parametrize("commit", ["65ca6a9", "z" * 40, "", COMMIT + "0"])
def test_a_commit_that_is_not_a_full_sha_is_rejected(commit):
    skip = skip_for(build("SUCCESS", source="webhook", commit=commit))
    assert skip.severity == "WARNING"  # the build's to mend: an ERROR would page whoever runs the relay
    assert "40-hex" in skip.reason


@pytest.mark.parametrize(
    "repo", ["acme/../admin", "acme/web app", "acme/web%2Fapp", "../x", "acme", "acme/webapp?x=1", "ａｃｍｅ/webapp"]
)
def test_a_repository_name_that_could_change_the_request_path_is_rejected(repo):
    skip = skip_for(build("SUCCESS", source="webhook", repo=repo))
    assert skip.severity == "WARNING"
    assert "no valid Bitbucket repository name" in skip.reason


def test_allowlist_limits_what_is_reported():
    config = relay.config.Config(repositories=relay.config.Patterns(("acme/*", "other/one")))
    assert isinstance(relay.translate.translate(build("SUCCESS", repo="acme/webapp"), config), relay.translate.Update)
    assert isinstance(relay.translate.translate(build("SUCCESS", repo="Other/One"), config), relay.translate.Update)
    assert "BITBUCKET_REPOSITORIES" in skip_for(build("SUCCESS", repo="evil/webapp"), config).reason


def test_allowlist_narrows_the_mirror_splits():
    config = relay.config.Config(repositories=relay.config.Patterns(("my_team/*",)))
    update = relay.translate.translate(build("SUCCESS", source="mirror", repo="my_team/web_app"), config)
    assert update.target.candidates == (relay.repository.Repository("my_team", "web_app"),)


def test_a_git_sources_resolved_url_names_the_repository_when_the_declared_one_says_otherwise():
    b = build("SUCCESS", source="git", repo="acme/declared")
    b["sourceProvenance"] = {"resolvedGitSource": {"url": "https://bitbucket.org/acme/webapp.git", "revision": COMMIT}}
    assert update_for(b).target.candidates == (relay.repository.Repository("acme", "webapp"),)


def test_a_git_source_whose_revision_is_a_branch_takes_its_commit_from_commit_sha():
    b = build("SUCCESS", source="git")
    b["source"]["gitSource"]["revision"] = "main"
    assert update_for(b).target.commit == COMMIT


def test_a_git_source_built_without_commit_sha_or_a_resolved_revision_takes_the_declared_commit():
    b = build("SUCCESS", source="git")  # its gitSource's revision is the commit
    del b["substitutions"]["COMMIT_SHA"]
    assert update_for(b).target.commit == COMMIT


def test_a_mirrors_resolved_name_names_the_repository_when_the_declared_one_says_otherwise():
    b = build("SUCCESS", source="mirror", repo="acme/webapp")
    b["source"]["repoSource"]["repoName"] = "bitbucket_acme_declared"
    update = update_for(b)
    assert update.target.candidates == (relay.repository.Repository("acme", "webapp"),)


def test_a_mirror_build_without_a_resolved_commit_takes_commit_sha_and_without_a_branch_branch_name():
    b = build("SUCCESS", source="mirror", branch=None)
    del b["sourceProvenance"]["resolvedRepoSource"]["commitSha"]
    b["substitutions"].update(COMMIT_SHA=COMMIT, BRANCH_NAME="feature/fish")
    update = update_for(b)
    assert (update.target.commit, update.status.refname) == (COMMIT, "feature/fish")


@pytest.mark.parametrize(
    ("source", "origin"),
    [("git", "gitSource"), ("mirror", "Cloud Source Repositories mirror"), ("connection", "Cloud Build connection")],
)
def test_a_build_without_a_commit_is_logged_naming_where_its_repository_was_found(source, origin):
    b = build("SUCCESS", source=source)
    b["substitutions"].pop("COMMIT_SHA", None)
    b.pop("sourceProvenance", None)
    for declared in b["source"].values():
        declared.pop("revision", None)
    skip = skip_for(b)
    assert (skip.severity, skip.reason) == ("WARNING", f"{origin} gives no full 40-hex commit SHA (got '')")


# --- what is posted ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state", "description"),
    [
        ("PENDING", "INPROGRESS", "Awaiting approval"),
        ("QUEUED", "INPROGRESS", "Queued"),
        ("WORKING", "INPROGRESS", "Running"),
        ("SUCCESS", "SUCCESSFUL", "Succeeded in 3m 12s"),
        ("FAILURE", "FAILED", "Failed after 3m 12s"),
        ("INTERNAL_ERROR", "FAILED", "Cloud Build internal error after 3m 12s"),
        ("TIMEOUT", "FAILED", "Timed out after 3m 12s"),
        ("CANCELLED", "STOPPED", "Cancelled"),
        ("EXPIRED", "STOPPED", "Expired in queue"),
    ],
)
def test_every_build_status_maps_to_a_bitbucket_state_and_a_description(status, state, description):
    update = update_for(build(status))
    assert (update.status.state, update.status.description) == (state, description)


@pytest.mark.parametrize("status", ["STATUS_UNKNOWN", "PAUSED", "success"])
def test_unknown_status_posts_nothing_and_warns(status):
    skip = skip_for(build(status))
    assert skip.severity == "WARNING"
    assert repr(status) in skip.reason


def test_failure_description_carries_cloud_builds_reason():
    b = build("FAILURE", failureInfo={"type": "USER_BUILD_STEP", "detail": 'Build step 2 "go test" failed'})
    b["startTime"], b["finishTime"] = "2026-11-27T09:00:00Z", "2026-11-27T09:01:05Z"
    assert update_for(b).status.description == 'Failed after 1m 5s: Build step 2 "go test" failed'
    b = build("TIMEOUT", statusDetail="build timed out")
    b["startTime"], b["finishTime"] = "2026-11-27T09:00:00Z", "2026-11-27T09:10:00.2Z"
    assert update_for(b).status.description == "Timed out after 10m: build timed out"


def test_description_never_exceeds_255_characters():
    update = update_for(build("FAILURE", failureInfo={"detail": "x" * 5000}))
    assert len(update.status.description) == 255
    assert update.status.description.startswith("Failed after 3m 12s: xxx")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.4, "59s"), (60, "1m"), (65, "1m 5s"), (3600, "1h"), (3725, "1h 2m")]
)
def test_durations_read_as_a_person_writes_them(seconds, text):
    assert relay.status.format_duration(seconds) == text


def test_key_is_the_trigger_id_so_statuses_of_the_original_function_are_updated():
    assert update_for(build("SUCCESS")).status.key == TRIGGER_ID


def test_key_without_trigger_id_is_stable_per_trigger_name_and_at_most_40_characters():
    long_a = "nightly-integration-tests-for-the-payments-service-a"
    long_b = "nightly-integration-tests-for-the-payments-service-b"
    key_a = update_for(build("SUCCESS", trigger_id=None, trigger_name=long_a)).status.key
    again = update_for(build("SUCCESS", "b-0002", trigger_id=None, trigger_name=long_a)).status.key
    key_b = update_for(build("SUCCESS", trigger_id=None, trigger_name=long_b)).status.key
    assert key_a == again
    assert key_a != key_b
    assert len(key_a) <= 40
    assert update_for(build("SUCCESS", trigger_id=None, trigger_name="short")).status.key == "short"
    assert update_for(build("SUCCESS", trigger_id=None, trigger_name=None)).status.key == "cloud-build"


def test_name_is_the_trigger_name_or_cloud_build():
    assert update_for(build("SUCCESS", trigger_name="webapp-pr")).status.name == "webapp-pr"
    assert update_for(build("SUCCESS", trigger_name=None)).status.name == "Cloud Build"


def test_url_is_the_build_log_and_falls_back_to_the_console_link():
    b = build("SUCCESS")
    assert update_for(b).status.url == b["logUrl"]
    del b["logUrl"]
    assert update_for(b).status.url == "https://console.cloud.google.com/cloud-build/builds/b-0001?project=acme-ci"


@pytest.mark.parametrize(
    ("branch", "refname"),
    [("feature/x", "feature/x"), ("refs/heads/feature/x", "feature/x"), ("", None), ("bad\nname", None)],
)
def test_refname_is_the_bare_branch_name(branch, refname):
    assert update_for(build("SUCCESS", source="webhook", branch=branch)).status.refname == refname


# --- a Data Center server's clone URLs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "repository"),
    [
        ("https://bb.example/scm/proj/repo.git", relay.repository.Repository("PROJ", "repo", "https://bb.example")),
        ("https://bb.example:443/scm/PROJ/repo", relay.repository.Repository("PROJ", "repo", "https://bb.example")),
        (
            "https://bb.example:8443/git/scm/proj/repo.git",
            relay.repository.Repository("PROJ", "repo", "https://bb.example:8443/git"),
        ),
        (
            "https://jdoe@bb.example/scm/proj/repo.git",
            relay.repository.Repository("PROJ", "repo", "https://bb.example"),
        ),
        (
            "https://jdoe:s3cret@bb.example/scm/proj/repo.git",
            relay.repository.Repository("PROJ", "repo", "https://bb.example"),
        ),
        (
            "https://BB.Example/scm/~jdoe/scratch.git",
            relay.repository.Repository("~jdoe", "scratch", "https://bb.example"),
        ),
        ("ssh://git@bb.example:7999/proj/repo.git", relay.repository.Repository("PROJ", "repo", ssh_host="bb.example")),
        ("https://jdoe@bitbucket.org/acme/webapp.git", relay.repository.Repository("acme", "webapp")),
        ("git@bitbucket.org:acme/webapp.git", relay.repository.Repository("acme", "webapp")),
    ],
)
def test_clone_urls_of_both_sites_name_their_repository_with_user_info_ignored(url, repository):
    assert relay.repository.valid_repository(relay.repository.repository_at(url)) == repository


@pytest.mark.parametrize(
    "url",
    ["http://bb.example/scm/proj/repo.git", "https://github.com/acme/webapp.git", "https://bb.example/proj/repo.git"],
)
def test_urls_of_no_bitbucket_site_name_no_repository(url):
    assert relay.repository.repository_at(url) is None


def test_a_skipped_clone_url_is_shown_without_its_password():
    b = build("SUCCESS", source="git")
    b["source"]["gitSource"]["url"] = "https://jdoe:s3cret-clone-pass@gitlab.example/acme/webapp.git"
    skip = skip_for(b)
    assert "s3cret-clone-pass" not in skip.reason
    assert "jdoe" not in skip.reason
    assert "'https://gitlab.example/acme/webapp.git'" in skip.reason


def test_a_skipped_clone_url_is_shown_without_its_query_or_fragment():
    """A token in a clone URL's query (or fragment) never reaches the log."""
    b = build("SUCCESS", source="git")
    b["source"]["gitSource"]["url"] = "https://gitlab.example/acme/webapp.git?access_token=glpat-q7Rk2#frag-s3cret"
    skip = skip_for(b)
    assert "glpat-q7Rk2" not in skip.reason
    assert "frag-s3cret" not in skip.reason
    assert "'https://gitlab.example/acme/webapp.git'" in skip.reason


def test_a_trigger_name_reaches_either_site_as_plain_text():
    """Control, bidirectional and zero-width characters of TRIGGER_NAME are made spaces in the status's name and
    Data Center's parent, as they are in its description and report."""
    b = build("SUCCESS", trigger_name="deploy\u202e\x1b[31m\u200bprod\nline")
    update = update_for(b)
    cloud, data_center = SITES
    bodies = (cloud.body(update.status), data_center.body(update.status))
    for text in (bodies[0]["name"], bodies[1]["name"], bodies[1]["parent"]):
        assert text == relay.text.plain(text)
        assert text.isprintable()
        assert text.startswith("deploy")


def test_a_personal_repository_keeps_its_tilde_project_and_a_project_key_goes_upper_case():
    b = build("SUCCESS", source="webhook", repo="proj/repo")
    b["substitutions"]["_BITBUCKET_SERVER"] = "https://bb.example/"
    assert update_for(b).target.candidates == (relay.repository.Repository("PROJ", "repo", "https://bb.example"),)


# --- how far along a shown status is (the state map's phases) --------------------------------------


@pytest.mark.parametrize(
    ("state", "description", "phase"),
    [
        ("INPROGRESS", "Awaiting approval", 0),
        ("INPROGRESS", "Queued", 1),
        ("INPROGRESS", "Running", 2),
        ("SUCCESSFUL", "Succeeded in 1m", relay.states.FINAL),
        ("STOPPED", "anything", relay.states.FINAL),
        ("INPROGRESS", "Building (another tool's words)", -1),
        ("INPROGRESS", "", -1),
    ],
)
def test_a_shown_status_is_as_far_along_as_its_state_and_description_say(state, description, phase):
    assert relay.states.phase(state, description) == phase


def test_every_in_progress_description_comes_from_the_state_map_and_moves_forward():
    phases = [
        relay.states.phase("INPROGRESS", update_for(build(s)).status.description)
        for s in ("PENDING", "QUEUED", "WORKING")
    ]
    assert phases == sorted(phases) == [0, 1, 2]


# --- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAX_EVENT_AGE_SECONDS": "a day"}, "MAX_EVENT_AGE_SECONDS must be a number of seconds"),
        ({"HTTP_TIMEOUT_SECONDS": "nan"}, "HTTP_TIMEOUT_SECONDS must be a number of seconds"),
        ({"EVENT_DEADLINE_SECONDS": "-1"}, "EVENT_DEADLINE_SECONDS must be a number of seconds from 1 to 500"),
        ({"BITBUCKET_API_URL": "http://api.bitbucket.org/2.0"}, "BITBUCKET_API_URL must be an https:// URL"),
        ({"CLOUD_BUILD_API_ENDPOINT": "ftp://127.0.0.1"}, "CLOUD_BUILD_API_ENDPOINT must be an https:// URL"),
        ({"BITBUCKET_OAUTH_TOKEN_URL": "https://"}, "BITBUCKET_OAUTH_TOKEN_URL must be an https:// URL"),
        ({"THREADS": "\u00b2"}, "THREADS must be a whole number"),  # '²' is a digit to str.isdigit, not to int
        ({"THREADS": "eighty"}, "THREADS must be a whole number"),
    ],
)
def test_a_bad_setting_is_a_configuration_error_naming_the_variable(env, message):
    with pytest.raises(relay.errors.ConfigurationError, match=message):
        relay.config.Config.from_env(env)


def test_settings_are_read_from_the_environment_with_their_defaults():
    config = relay.config.Config.from_env(
        {
            "HTTP_TIMEOUT_SECONDS": "2.5",
            "BITBUCKET_API_URL": "http://127.0.0.1:8080/2.0/",
            "BITBUCKET_REPOSITORIES": " a/*, ,B/c ",
        }
    )
    assert config.http_timeout_seconds == 2.5
    assert config.timeout == (2.5, 2.5)
    assert config.api_url == "http://127.0.0.1:8080/2.0"
    assert config.repositories == relay.config.Patterns(("a/*", "b/c"))
    assert config.max_event_age_seconds == relay.config.DEFAULT_MAX_EVENT_AGE_SECONDS
    lines = relay.config.Config.from_env({"LOG_EXCERPT_LINES": " 12 ", "THREADS": "80"})
    assert (lines.log_excerpt_lines, type(lines.log_excerpt_lines), lines.connections) == (12, int, 80)


NUMBERS = {number.variable: number for number in (*relay.config.NUMBER_VARIABLES.values(), relay.config.THREADS)}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOG_EXCERPT_LINES", "inf"),
        ("LOG_EXCERPT_LINES", "1e400"),
        ("LOG_EXCERPT_LINES", "abc"),
        ("LOG_EXCERPT_LINES", "2.5"),
        ("LOG_EXCERPT_LINES", "1001"),
        ("MAX_EVENT_AGE_SECONDS", "inf"),
        ("THREADS", "80.5"),
        *((name, value) for name in NUMBERS for value in ("-inf", "1e400", "nan", "abc")),
        *((name, str(number.high * 2 + 1)) for name, number in NUMBERS.items()),
        *((name, str(number.low - 1)) for name, number in NUMBERS.items()),
    ],
)
def test_a_number_setting_outside_its_unit_and_bounds_is_a_configuration_error_saying_both(variable, value):
    """Validated once, when the instance starts: never an OverflowError on every event (`LOG_EXCERPT_LINES=inf`), nor
    "a number of seconds" said of lines."""
    number = NUMBERS[variable]
    with pytest.raises(relay.errors.ConfigurationError) as raised:
        relay.config.Config.from_env({variable: value})
    said = str(raised.value)
    assert said.startswith(f"{variable} must be ")
    assert f" of {number.unit} from {number.low} to {number.high}" in said


def test_each_number_settings_unit_and_bounds_are_in_the_configuration_reference():
    rows = {line.split("|")[1].strip(): line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
            if line.startswith("| `")}  # fmt: skip
    for name, number in NUMBERS.items():
        assert f"from {number.low} to {number.high}" in rows[f"`{name}`"], name


# --- hostile values never change a request's path ---------------------------------------------------

CLOUD_API = "https://api.bitbucket.org/2.0"
SITES = (
    relay.bitbucket_cloud.BitbucketCloud(CLOUD_API, client=None),
    relay.bitbucket_data_center.BitbucketDataCenter(client=None),
)


def request_paths(update: relay.translate.Update) -> list[str]:
    """Every path the update's site would be sent: Cloud's write and read, Data Center's builds, the report."""
    cloud, data_center = SITES
    paths = []
    for repository in update.target.candidates:
        site = cloud if repository.on_cloud else data_center
        if repository.on_cloud:
            written = urlsplit(cloud.statuses_url(repository, update.target.commit)).path
            paths += [written, f"{written}/{update.status.key}"]
        else:
            paths.append(urlsplit(data_center.builds_url(repository, update.target.commit)).path)
        if update.report:
            key = update.report.key if repository.on_cloud else update.report.server_key
            paths.append(urlsplit(site.report_url(repository, update.target.commit, key)).path)
    return paths


def assert_unchanged_by_normalising(path: str) -> None:
    """urllib3 (under requests) removes a path's `.` and `..` segments before the request leaves: none may be there."""
    assert parse_url(f"https://bitbucket.example{path}").path == path, path


def assert_only_status_paths(decision: relay.translate.Update | relay.errors.Skip) -> None:
    if isinstance(decision, relay.errors.Skip):
        return
    for path in request_paths(decision):
        assert ALLOWED_PATH.fullmatch(path), path
        assert_unchanged_by_normalising(path)
    assert re.fullmatch(relay.status.KEY_RE, decision.status.key)
    assert len(decision.status.key) <= 40
    assert len(decision.status.server_key) <= 255


@pytest.mark.parametrize("field", HOSTILE_FIELDS)
@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:30] for v in HOSTILE])
def test_hostile_values_reach_no_other_path(field, value):
    decision = relay.translate.translate(hostile_build(field, value), CONFIG)
    assert_only_status_paths(decision)
    if field in ("workspace", "slug", "commit") and value == value.strip():
        assert isinstance(decision, relay.errors.Skip)  # rejected, not escaped (surrounding whitespace is trimmed)


@settings(max_examples=500, deadline=None)
@given(field=st.sampled_from(HOSTILE_FIELDS), value=st.text(min_size=1, max_size=300))
def test_any_text_in_any_field_reaches_no_other_path(field, value):
    assert_only_status_paths(relay.translate.translate(hostile_build(field, value), CONFIG))


@settings(max_examples=300, deadline=None)
@given(project=st.text(min_size=1, max_size=40), slug=st.text(min_size=1, max_size=40))
def test_any_project_or_slug_on_a_server_reaches_no_other_path(project, slug):
    b = build("SUCCESS", source="webhook", repo=f"{project}/{slug}")
    b["substitutions"]["_BITBUCKET_SERVER"] = "https://bb.example/bitbucket"
    decision = relay.translate.translate(b, CONFIG)
    if isinstance(decision, relay.translate.Update):
        paths = request_paths(decision)
        assert len(paths) == 2  # the builds and the report
        for path in paths:
            assert SERVER_PATH.fullmatch(path), path
            assert_unchanged_by_normalising(path)


# --- no value from a build is a path segment of dots alone ------------------------------------------------


@pytest.mark.parametrize("key", [".", "..", "...", "...."])
def test_a_key_of_dots_alone_is_hashed_on_both_sites_so_the_status_read_keeps_its_path(key):
    """`_BITBUCKET_KEY=..` would make Cloud's status read `…/statuses/build/..`: urllib3 sends it to `…/statuses/`."""
    b = build("SUCCESS")
    b["substitutions"]["_BITBUCKET_KEY"] = key
    status = update_for(b).status
    hashed = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
    assert (status.key, status.server_key) == (hashed, hashed)
    assert_only_status_paths(update_for(b))


@pytest.mark.parametrize(
    "name",
    [
        "projects/../locations/europe-west1/connections/bb/repositories/webapp",
        "projects/acme-ci/locations/europe-west1/connections/./repositories/webapp",
        "projects/acme-ci/locations/europe-west1/connections/bb/repositories/..",
        "projects/acme-ci/locations/europe-west1/connections/bb/repositories/...",
    ],
)
def test_a_connected_repository_with_a_segment_of_dots_is_not_a_resource_name(name):
    """Its name is the path of the request to Cloud Build's API (`/v2/{name}`), made with the function's credentials."""
    b = build("SUCCESS", source="connection")
    b["source"]["connectedRepository"]["repository"] = name
    skip = skip_for(b)
    assert (skip.severity, "is not a repository resource name" in skip.reason) == ("WARNING", True)


@pytest.mark.parametrize("path", ["/bitbucket/..", "/./bitbucket", "/bitbucket/../admin", "/..."])
def test_a_server_whose_context_path_has_a_segment_of_dots_is_not_a_server(path):
    assert relay.repository.normalized_server(f"https://bb.example{path}") is None
    b = build("SUCCESS", source="webhook", repo="PROJ/repo")
    b["substitutions"]["_BITBUCKET_SERVER"] = f"https://bb.example{path}"
    assert skip_for(b).severity == "WARNING"


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://[::1]:8443/", "https://[::1]:8443"),  # an IPv6 address keeps its brackets
        ("http://127.0.0.1:7990/", "http://127.0.0.1:7990"),  # plain http to this machine only
        ("https://BB.Example:443/Bitbucket-X/", "https://bb.example/Bitbucket-X"),  # only the trailing '/' goes
    ],
)
def test_a_servers_url_is_normalized_as_entries_and_builds_compare_it(url, normalized):
    assert relay.repository.normalized_server(url) == normalized
    b = build("SUCCESS", source="webhook", repo="PROJ/repo")
    b["substitutions"]["_BITBUCKET_SERVER"] = url
    assert update_for(b).target.candidates == (relay.repository.Repository("PROJ", "repo", normalized),)


@pytest.mark.parametrize(
    ("url", "shown"),  # shown in the log without its user info, query or fragment
    [
        ("https://", "https://"),  # no host
        ("https://@bb.example", "https://bb.example"),  # user info without a user
        ("https://:pw@bb.example", "https://bb.example"),
        ("https://bb.example/?tab=1", "https://bb.example/"),
        ("https://bb.example/#top", "https://bb.example/"),
        ("http://bb.example", "http://bb.example"),  # plain http off this machine
    ],
)
def test_a_server_url_with_no_host_user_info_a_query_or_a_fragment_is_refused_with_a_warning(url, shown):
    assert relay.repository.normalized_server(url) is None
    b = build("SUCCESS", source="webhook", repo="PROJ/repo")
    b["substitutions"]["_BITBUCKET_SERVER"] = url
    skip = skip_for(b)
    assert (skip.severity, skip.reason) == ("WARNING", f"_BITBUCKET_SERVER {shown!r} is not an https:// URL")


SEGMENT = st.text(alphabet="./-_aZ9%~", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(project=SEGMENT, connection=SEGMENT, repository=SEGMENT)
def test_any_connected_repository_name_keeps_its_path_to_cloud_builds_api(project, connection, repository):
    b = build("SUCCESS", source="connection")
    name = f"projects/{project}/locations/europe-west1/connections/{connection}/repositories/{repository}"
    b["source"]["connectedRepository"]["repository"] = name
    decision = relay.translate.translate(b, CONFIG)
    if isinstance(decision, relay.translate.Update):
        assert_unchanged_by_normalising(f"/v2/{decision.target.connected}")


@settings(max_examples=300, deadline=None)
@given(path=st.lists(SEGMENT, max_size=3).map(lambda segments: "".join(f"/{s}" for s in segments)))
def test_any_servers_context_path_keeps_the_path_of_every_request(path):
    b = build("SUCCESS", source="webhook", repo="PROJ/repo")
    b["substitutions"]["_BITBUCKET_SERVER"] = f"https://bb.example{path}"
    decision = relay.translate.translate(b, CONFIG)
    if isinstance(decision, relay.translate.Update):
        _, data_center = SITES
        [repository] = decision.target.candidates
        assert_unchanged_by_normalising(urlsplit(data_center.builds_url(repository, COMMIT)).path)


# --- an annotation's path is bounded once the step's dir is joined in ------------------------------------------


def test_a_step_dir_of_6000_characters_gives_no_annotation_path_over_1000():
    directory = "d" * 6000
    assert relay.annotations.repository_path("app.py", directory) is None
    assert relay.annotations.repository_path("app.py", "d" * 900) == "d" * 900 + "/app.py"
    annotations = relay.step_log.annotations_from(["app.py:3:1: error: boom"], directory)
    assert all(len(a.path or "") <= 1000 for a in annotations)
    assert relay.junit.failure_place("app.py:3: boom", directory) is None
