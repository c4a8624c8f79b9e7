"""The newest build wins: of two builds of one status (one trigger, one commit), the one created later is
shown, whatever order Pub/Sub delivers their messages in, to a warm instance or a new one, on Bitbucket
Cloud and on a Data Center server; what it costs; and what happens when Cloud Build's API may not be asked."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import relay.errors
import relay.reporting
import relay.status
import relay.transport
import relay.warm
from standins.builds import build
from tests.conftest import dc_build, deliver, log_lines

CREATED = {"b-1": "2026-11-27T09:00:00Z", "b-2": "2026-11-27T09:10:00Z", "b-3": "2026-11-27T09:20:00Z"}


def ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


@pytest.fixture(params=["cloud", "data center"])
def site(request, bitbucket, google) -> Any:
    """(a function that makes a build of this site, a function that says what the site shows for a commit)."""
    if request.param == "cloud":

        def make(status: str, build_id: str, commit: str, **extra: Any) -> dict:
            return build(status, build_id, commit=commit, createTime=CREATED[build_id], **extra)

        return make, lambda commit: bitbucket.app.shown("acme", "webapp", commit)
    server = request.getfixturevalue("both")

    def make_on_server(status: str, build_id: str, commit: str, **extra: Any) -> dict:
        return dc_build(status, server, build_id, commit=commit, createTime=CREATED[build_id], **extra)

    return make_on_server, lambda commit: server.shown(commit=commit)


def shows(shown: Callable[[str], list[dict]], commit: str) -> tuple[str, str]:
    [status] = shown(commit)
    state = {"CANCELLED": "STOPPED"}.get(status["state"], status["state"])
    return state, status["url"].split("?")[0].rsplit("/", 1)[-1]


# Build 1 was queued and running when Bitbucket went down; its failure, and the whole re-run (build 2, which
# passes), were refused and come back in Pub/Sub's order. Each was published before any of them was written.
OUTAGE = [("FAILURE", "b-1", 10), ("QUEUED", "b-2", 9), ("WORKING", "b-2", 8), ("SUCCESS", "b-2", 7)]


@pytest.mark.parametrize("instance", ["warm", "new for every message"])
def test_after_an_outage_every_order_of_redelivery_ends_on_the_rerun_and_a_newer_run_takes_over(
    site, google, new_instance, instance
):
    make, shown = site
    google.app.record(*(make("QUEUED", b, "0" * 40) for b in CREATED))
    for n, order in enumerate(itertools.permutations(OUTAGE)):
        commit = f"{n + 1:040x}"
        deliver(make("QUEUED", "b-1", commit), ago(12))
        deliver(make("WORKING", "b-1", commit), ago(11))
        for status, build_id, minutes in order:
            if instance != "warm":
                new_instance()
            deliver(make(status, build_id, commit), ago(minutes))
        assert shows(shown, commit) == ("SUCCESSFUL", "b-2"), order
        # build 3, queued while the redeliveries were still arriving: published before they were written
        deliver(make("QUEUED", "b-3", commit), ago(6))
        assert shows(shown, commit) == ("INPROGRESS", "b-3"), order


def test_two_builds_running_at_once_end_on_the_newer_whichever_finishes_last(site, google, new_instance):
    make, shown = site
    google.app.record(*(make("QUEUED", b, "0" * 40) for b in CREATED))
    interleavings = [
        ["Q1", "Q2", "W1", "W2", "S2", "F1"],  # the older build finishes last
        ["Q1", "W1", "Q2", "F1", "W2", "S2"],
        ["Q2", "Q1", "W2", "S2", "W1", "F1"],  # the newer build's messages arrive first
    ]
    messages = {"Q1": ("QUEUED", "b-1"), "W1": ("WORKING", "b-1"), "F1": ("FAILURE", "b-1"),
                "Q2": ("QUEUED", "b-2"), "W2": ("WORKING", "b-2"), "S2": ("SUCCESS", "b-2")}  # fmt: skip
    for n, interleaving in enumerate(interleavings):
        commit = f"{n + 1:040x}"
        for step, name in enumerate(interleaving):
            if step == 3:
                new_instance()  # the instance is replaced half way
            deliver(make(*messages[name], commit))
        assert shows(shown, commit) == ("SUCCESSFUL", "b-2"), interleaving


@pytest.mark.parametrize(
    "interleaving",
    [
        ["Q1", "W1", "Q2", "W2", "S2", "F1"],  # the newer build's messages arrive before the older one's last
        ["Q2", "W2", "S2", "Q1", "W1", "F1"],
        ["Q1", "Q2", "W1", "W2", "F1", "S2"],
    ],
)
def test_two_branches_of_one_commit_share_its_status_and_the_newer_build_wins(site, google, interleaving):
    """One trigger builds one commit on main (build 1) and on release/1 (build 2, newer): the sites keep one
    status per repository, commit and key, the branch being an attribute of it."""
    make, shown = site
    branch = {"1": "main", "2": "release/1"}
    messages = {"Q": "QUEUED", "W": "WORKING", "S": "SUCCESS", "F": "FAILURE"}
    commit = "7" * 40
    for name in interleaving:
        deliver(make(messages[name[0]], f"b-{name[1]}", commit, branch=branch[name[1]]))
    assert shows(shown, commit) == ("SUCCESSFUL", "b-2"), interleaving
    [status] = shown(commit)
    assert status.get("refname", status.get("ref")) in ("release/1", "refs/heads/release/1")


def test_a_newer_builds_status_is_never_replaced_by_an_older_builds_message(site, google, new_instance):
    make, shown = site
    google.app.record(make("QUEUED", "b-2", "0" * 40))
    for n, status in enumerate(("QUEUED", "WORKING", "FAILURE", "CANCELLED")):
        commit = f"{n + 1:040x}"
        deliver(make("WORKING", "b-2", commit))
        new_instance()
        deliver(make(status, "b-1", commit))  # published now, after build 2's status was written
        assert shows(shown, commit) == ("INPROGRESS", "b-2"), status


def test_a_normal_lifecycle_costs_four_calls_and_no_cloud_build_api_call(bitbucket, google):
    asked = google.app.counts["cloudbuild.builds.get"]
    for status in ("QUEUED", "WORKING", "SUCCESS"):
        deliver(build(status, "b-2", createTime=CREATED["b-2"]))
    assert [c.method for c in bitbucket.app.status_calls()] == ["GET", "POST", "POST", "POST"]
    assert google.app.counts["cloudbuild.builds.get"] == asked


def test_a_rerun_on_a_warm_instance_asks_nothing_of_cloud_build(bitbucket, google):
    """The instance saw build 1's messages: it knows when build 1 was created."""
    asked = google.app.counts["cloudbuild.builds.get"]
    for status in ("QUEUED", "WORKING", "FAILURE"):
        deliver(build(status, "b-1", createTime=CREATED["b-1"]))
    for status in ("QUEUED", "WORKING", "SUCCESS"):
        deliver(build(status, "b-2", createTime=CREATED["b-2"]))
    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", build()["substitutions"]["COMMIT_SHA"])] == [
        "SUCCESSFUL"
    ]
    assert google.app.counts["cloudbuild.builds.get"] == asked
    assert len(bitbucket.app.status_calls()) == 8  # 4 a lifecycle: the re-run's Queued reads once


def test_a_new_instance_asks_cloud_build_once_for_the_shown_build_and_remembers(bitbucket, google, new_instance):
    google.app.record(build("QUEUED", "b-2", createTime=CREATED["b-2"]))
    deliver(build("SUCCESS", "b-2", createTime=CREATED["b-2"]))
    new_instance()
    asked = google.app.counts["cloudbuild.builds.get"]
    for status in ("QUEUED", "WORKING", "FAILURE"):  # an older build's late messages
        deliver(build(status, "b-1", createTime=CREATED["b-1"]))
    assert google.app.counts["cloudbuild.builds.get"] == asked + 1
    # build 2's result: read and written; then one read for build 1, known stale after it: no call at all
    assert [c.method for c in bitbucket.app.status_calls()] == ["GET", "POST", "GET"]


def test_without_permission_to_read_builds_the_publish_time_decides_with_one_warning(
    bitbucket, google, new_instance, capsys
):
    google.app.cloud_build_answer = 403
    commit = build()["substitutions"]["COMMIT_SHA"]
    deliver(build("SUCCESS", "b-2", createTime=CREATED["b-2"]))
    new_instance()
    deliver(build("FAILURE", "b-1", createTime=CREATED["b-1"]), ago(5))  # published before b-2 was written
    deliver(build("WORKING", "b-1", createTime=CREATED["b-1"]), ago(6))
    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", commit)] == ["SUCCESSFUL"]
    deliver(build("QUEUED", "b-3", createTime=CREATED["b-3"]))  # published now: replaces
    assert [s["state"] for s in bitbucket.app.shown("acme", "webapp", commit)] == ["INPROGRESS"]
    warnings = [line for line in log_lines(capsys.readouterr().out) if line["severity"] == "WARNING"]
    assert len(warnings) == 1
    assert "cloudbuild.builds.get (roles/cloudbuild.builds.viewer on the project)" in warnings[0]["message"]


def test_a_transient_failure_of_cloud_builds_api_is_redelivered_and_the_redelivery_lands(
    bitbucket, google, new_instance
):
    google.app.record(build("QUEUED", "b-1", createTime=CREATED["b-1"]))
    deliver(build("FAILURE", "b-1", createTime=CREATED["b-1"]))
    new_instance()
    google.app.cloud_build_answer = 503
    with pytest.raises(relay.errors.TransientError, match="Cloud Build's API answered 503"):
        deliver(build("SUCCESS", "b-2", createTime=CREATED["b-2"]))
    google.app.cloud_build_answer = None
    deliver(build("SUCCESS", "b-2", createTime=CREATED["b-2"]))
    [status] = bitbucket.app.shown("acme", "webapp", build()["substitutions"]["COMMIT_SHA"])
    assert (status["state"], status["url"]) == ("SUCCESSFUL", build("SUCCESS", "b-2")["logUrl"])


def test_a_create_time_in_the_future_counts_as_the_publish_time(bitbucket, new_instance):
    """A message cannot make its build newer than the moment it was published."""
    commit = build()["substitutions"]["COMMIT_SHA"]
    deliver(build("SUCCESS", "b-1", createTime="2099-01-01T00:00:00Z"), ago(30))
    deliver(build("QUEUED", "b-2", createTime=ago(20)))
    [status] = bitbucket.app.shown("acme", "webapp", commit)
    assert (status["state"], "b-2" in status["url"]) == ("INPROGRESS", True)


@pytest.mark.parametrize(
    ("url", "ref"),
    [
        ("https://console.cloud.google.com/cloud-build/builds;region=europe-west1/0b4f-9a?project=1234",
         relay.status.BuildRef("1234", "europe-west1", "0b4f-9a")),
        ("https://console.cloud.google.com/cloud-build/builds/0b4f-9a?project=acme-ci",
         relay.status.BuildRef("acme-ci", "global", "0b4f-9a")),
        ("https://console.cloud.google.com/gcr/builds/aeccd2ef-f51a?project=292927648743",
         relay.status.BuildRef("292927648743", "global", "aeccd2ef-f51a")),
        ("https://console.cloud.google.com/cloud-build/builds/0b4f-9a?authuser=1&project=p-1",
         relay.status.BuildRef("p-1", "global", "0b4f-9a")),
        ("https://console.cloud.google.com/cloud-build/builds/..?project=1234", None),
        ("https://console.cloud.google.com/cloud-build/builds/a%2F..?project=1234", None),
        ("https://console.cloud.google.com/cloud-build/builds;region=../x?project=1234", None),
        ("https://console.cloud.google.com/cloud-build/builds/b-1?project=../../x", None),
        ("https://evil.example/cloud-build/builds/b-1?project=1234", None),
        ("https://console.cloud.google.com/cloud-build/builds/b-1", None),
        ("https://jenkins.example/job/webapp/12/", None),
    ],
)  # fmt: skip
def test_a_status_url_names_its_build_only_in_cloud_builds_shapes(url, ref):
    assert relay.status.build_at(url) == ref


def shown_build(bitbucket, commit: str) -> tuple[str, str]:
    [status] = bitbucket.app.shown("acme", "webapp", commit)
    return status["description"], status["url"].split("?")[0].rsplit("/", 1)[-1]


def test_a_status_this_instance_only_read_is_read_again_before_the_same_builds_next_state(
    bitbucket, google, monkeypatch
):
    """Instance 2 saw build 1's Queued only by reading it; instance 1 then posted the newer build 2. Build 1's
    Running on instance 2 must read again, not trust what it read earlier."""
    commit = "8" * 40
    google.app.record(build("QUEUED", "b-2", createTime=CREATED["b-2"]))

    def on(instance: Any, status: str, build_id: str) -> Any:
        monkeypatch.setattr(relay.warm, "instance", instance)
        deliver(build(status, build_id, commit=commit, createTime=CREATED[build_id]))
        return relay.warm.instance

    first = on(None, "QUEUED", "b-1")  # instance 1 posts build 1's Queued
    second = on(None, "QUEUED", "b-1")  # a duplicate reaches instance 2: it reads, and posts nothing
    on(first, "QUEUED", "b-2")  # instance 1 posts the newer build's Queued
    on(second, "WORKING", "b-1")
    assert shown_build(bitbucket, commit) == ("Queued", "b-2")


def test_a_write_that_fails_forgets_what_it_was_about_to_show_so_the_next_event_reads(bitbucket, monkeypatch):
    """Build 2's Queued reached Bitbucket, but every answer came too late: the instance must not go on believing
    that build 1 is shown, or build 1's late Running would replace build 2's status."""
    commit = "9" * 40
    monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", "0.2")
    bitbucket.app.fault_delay = 0.4
    deliver(build("QUEUED", "b-1", commit=commit, createTime=CREATED["b-1"]))
    bitbucket.app.fail_next(
        "", *["timeout"] * (relay.transport.HTTP_RETRIES + 1)
    )  # the read answers; each POST lands late
    with pytest.raises(relay.errors.TransientError):
        deliver(build("QUEUED", "b-2", commit=commit, createTime=CREATED["b-2"]))
    assert shown_build(bitbucket, commit) == ("Queued", "b-2")
    deliver(build("WORKING", "b-1", commit=commit, createTime=CREATED["b-1"]))
    assert shown_build(bitbucket, commit) == ("Queued", "b-2")


def test_a_new_instance_says_why_it_posts_nothing_an_earlier_state_of_the_shown_build_or_an_older_builds(
    bitbucket, google, new_instance, capsys
):
    google.app.record(build("QUEUED", "b-2", createTime=CREATED["b-2"]))
    deliver(build("SUCCESS", "b-2", createTime=CREATED["b-2"]))
    new_instance()
    deliver(build("WORKING", "b-2", createTime=CREATED["b-2"]))  # a late message of the build Bitbucket shows
    new_instance()
    deliver(build("SUCCESS", "b-1", createTime=CREATED["b-1"]))  # an older build's, read before it is sent

    _, late, older = (line["message"] for line in log_lines(capsys.readouterr().out))
    assert late == f"Did not post INPROGRESS (Running): {relay.reporting.ALREADY_SHOWN}"
    assert older.startswith("Did not post SUCCESSFUL (Succeeded")
    assert older.endswith(f": {relay.reporting.STALE}")


def test_a_build_without_a_create_time_is_posted_and_a_late_state_of_it_asks_nothing_of_cloud_build(
    bitbucket, google, new_instance
):
    """A message need not carry createTime: its build is posted, ordered by when the message was published; a late
    message of the build Bitbucket already shows needs no age of any build."""

    def undated(status: str) -> dict[str, Any]:
        b = build(status, "b-1")
        del b["createTime"]
        return b

    google.app.record(build("QUEUED", "b-1"))  # Cloud Build's API could tell its age: it need not be asked
    deliver(undated("SUCCESS"))
    new_instance()
    asked = google.app.counts["cloudbuild.builds.get"]
    deliver(undated("WORKING"))
    assert shown_build(bitbucket, build()["substitutions"]["COMMIT_SHA"])[0].startswith("Succeeded")
    assert google.app.counts["cloudbuild.builds.get"] == asked


def test_a_status_whose_url_has_no_path_is_replaced_by_a_message_published_after_it_was_written(
    bitbucket, new_instance
):
    """Under the status's key Bitbucket shows a URL of no path (another tool's, or an edited one): it names no
    build, so the publish time decides, as for any status of unknown age."""
    commit = build()["substitutions"]["COMMIT_SHA"]
    deliver(build("SUCCESS", "b-1"))
    [status] = bitbucket.app.statuses.values()
    status["url"] = "https://ci.example.com"
    new_instance()
    deliver(build("QUEUED", "b-2"))
    assert shown_build(bitbucket, commit) == ("Queued", "b-2")
