"""Soaks: whole build lifecycles delivered as Pub/Sub delivers them — mostly in
order, with local swaps and duplicates, every raise redelivered later — to one
instance that is replaced now and then.

- the fault soak: a Bitbucket Cloud and a Bitbucket Data Center server (a quarter
  of the builds) that fail a third of their calls;
- the budget soak: a Bitbucket that grants each credential B calls per window of
  W seconds and answers 429 beyond it; 300 builds over 10 repositories, once
  with one credential for all, once with one repository access token each;
- the outage soak: triggers fail and are re-run (2-3 builds per commit, some at
  once) while Bitbucket refuses every call, then it recovers and the backlog is
  redelivered in random order; on Bitbucket Cloud and on a Data Center server.

`make soak` runs both at full size; tests/test_soak.py runs short ones in `make test`.
    python -m tests.soak --builds 250 --fault-rate 0.35
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import random
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import main
import relay.errors
import relay.reporting
import relay.warm
from standins import remember_secret
from standins.bitbucket import FAULTS, Bitbucket, went_to_older
from standins.builds import Context, background_event, build, now
from standins.datacenter import DataCenter
from standins.google import Google
from standins.processes import environment

FINALS = {"SUCCESS": "SUCCESSFUL", "FAILURE": "FAILED", "TIMEOUT": "FAILED", "INTERNAL_ERROR": "FAILED",
          "CANCELLED": "STOPPED", "EXPIRED": "STOPPED"}  # fmt: skip
FINAL_WEIGHTS = {"SUCCESS": 60, "FAILURE": 20, "TIMEOUT": 5, "INTERNAL_ERROR": 3, "CANCELLED": 8, "EXPIRED": 4}
TOKEN = "soak-access-token-lt2eMk8cr2wF3aeufMJoP4l5"
SERVER_TOKEN = "soak-data-center-token-993GFSBat2afcRG0ik8DIsMS"
SERVER_STATES = {"CANCELLED": "STOPPED"}  # what Data Center calls Cloud's STOPPED


@dataclass
class Figures:
    builds: int
    messages: int
    duplicates: int
    swaps: int
    deliveries: int = 0
    redeliveries: int = 0
    new_instances: int = 0
    bitbucket_calls: int = 0
    failed_calls: int = 0
    in_progress_dropped: int = 0  # acknowledged without a write: a 429, or the budget nearly spent
    seconds: float = 0.0
    server_builds: int = 0  # of them on a Bitbucket Data Center server
    credentials: int = 1
    budget: str = ""

    def lines(self) -> list[str]:
        share = self.failed_calls / self.bitbucket_calls if self.bitbucket_calls else 0
        lines = [
            f"builds {self.builds}{f' ({self.server_builds} on a Data Center server)' if self.server_builds else ''}, "
            f"messages published {self.messages} "
            f"({self.duplicates} duplicates = {self.duplicates / self.messages:.0%}, {self.swaps} local swaps)",
            f"deliveries {self.deliveries} (redeliveries after a raise {self.redeliveries}), "
            f"new instances {self.new_instances}",
            f"Bitbucket calls {self.bitbucket_calls} ({self.bitbucket_calls / self.builds:.2f} per build), "
            f"failed or refused by the stand-in {self.failed_calls} ({share:.0%})",
            f"time {self.seconds:.1f} s on {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
        ]
        if self.budget:
            lines.insert(3, f"{self.credentials} credential(s), {self.budget}; "
                            f"in-progress states dropped {self.in_progress_dropped}")  # fmt: skip
        return lines


@dataclass(order=True)
class Delivery:
    ready_at: float
    event: dict[str, Any] = field(compare=False)
    published: str = field(compare=False)


SERVER_REPOSITORY = "PLAT/service"


def publish_order(
    builds: int, rng: random.Random, repositories: list[str], server: str | None = None
) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str], int, int]:
    """The messages in the order Pub/Sub hands them out, and each commit's true final state;
    with a server, every fourth build is of a repository on it."""
    messages, truth = [], {}
    for n in range(builds):
        final = rng.choices(list(FINAL_WEIGHTS), weights=list(FINAL_WEIGHTS.values()))[0]
        commit, repo = f"{n:040x}", repositories[n % len(repositories)]
        statuses = ["QUEUED", final] if final == "EXPIRED" else ["QUEUED", "WORKING", final]
        if rng.random() < 0.1:
            statuses.insert(0, "PENDING")
        on_server = server is not None and n % 4 == 3
        for status in statuses:
            message = build(status, f"soak-{n}", commit=commit, repo=repo)
            if on_server:
                message["source"]["gitSource"]["url"] = f"{server}/scm/plat/service.git"
            messages.append(message)
        truth[(SERVER_REPOSITORY if on_server else repo, commit)] = FINALS[final]
    swaps, duplicates = _swap_and_duplicate(messages, rng)
    return messages, truth, duplicates, swaps


def _swap_and_duplicate(messages: list[dict[str, Any]], rng: random.Random) -> tuple[int, int]:
    """Pub/Sub's order: neighbours trade places now and then, and some messages come twice, a few places
    later. Returns (swaps, duplicates)."""
    swaps = 0
    for i in range(len(messages) - 1):
        if rng.random() < 0.15:
            messages[i], messages[i + 1] = messages[i + 1], messages[i]
            swaps += 1
    duplicates = 0
    for i in range(len(messages) - 1, -1, -1):
        if rng.random() < 0.3:
            messages.insert(min(len(messages), i + rng.randint(1, 6)), messages[i])
            duplicates += 1
    return swaps, duplicates


class PubSub:
    """Delivers messages to the function as Pub/Sub does: several at once, each one that raises redelivered
    later at a random place in the queue (after `redelivery_delay()` seconds), and now and then the instance
    replaced by a new one once its events have drained."""

    def __init__(self, queue: list[Delivery], rng: random.Random, figures: Figures, workers: int = 4) -> None:
        self.queue = queue
        self.rng = rng
        self.figures = figures
        self.workers = workers
        self.redelivery_delay: Any = lambda: 0.0
        self.replace_rate = 0.02
        self._lock = threading.Lock()
        self._pending = len(queue)
        self._in_flight = 0
        self._replacing = False

    def deliver(self, deadline: float) -> tuple[int, str]:
        """Deliver until every message is acknowledged or `deadline` seconds pass: (messages still pending,
        the function's log)."""
        started = time.monotonic()
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            relay.warm.instance = None
            threads = [threading.Thread(target=self._work, args=(started + deadline,)) for _ in range(self.workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            relay.warm.instance = None
        return self._pending, log.getvalue()

    def _take(self) -> Delivery | None:
        """The next delivery that is due; now and then the instance is replaced, once it has drained."""
        with self._lock:
            if self._replacing and self._in_flight == 0:
                relay.warm.instance = None  # a new instance: cold, with no memory of earlier events
                self.figures.new_instances += 1
                self._replacing = False
            due = next((i for i, d in enumerate(self.queue) if d.ready_at <= time.monotonic()), None)
            if self._replacing or due is None:
                return None
            self.figures.deliveries += 1
            self._in_flight += 1
            if self.rng.random() < self.replace_rate:
                self._replacing = True
            return self.queue.pop(due)

    def _work(self, until: float) -> None:
        while time.monotonic() < until:
            delivery = self._take()
            if delivery is None:
                with self._lock:
                    if self._pending == 0:
                        return
                time.sleep(0.002)
                continue
            try:
                main.build_status(delivery.event, Context(delivery.published))
            except relay.errors.TransientError:
                with self._lock:  # Pub/Sub redelivers it later, with its original publish time
                    self.figures.redeliveries += 1
                    delivery.ready_at = time.monotonic() + self.redelivery_delay()
                    self.queue.insert(min(len(self.queue), self.rng.randint(3, 30)), delivery)
                    self._in_flight -= 1
                continue
            with self._lock:
                self._pending -= 1
                self._in_flight -= 1


def run(
    builds: int,
    fault_rate: float = 0.35,
    seed: int = 7,
    workers: int = 4,
    deadline: float = 600,
    *,
    repositories: int = 1,
    credentials: int = 1,
    budget: int | None = None,
    window: float = 5.0,
    data_center: bool = False,
) -> Figures:
    """Deliver every message until each is acknowledged; assert every build ends in its true state."""
    rng = random.Random(seed)
    repos = ["acme/webapp"] if repositories == 1 else [f"acme/service-{n}" for n in range(repositories)]
    server_app = DataCenter(fault_rate=fault_rate, seed=seed)
    server_app.accept_token(SERVER_TOKEN)
    on_server = server_app.serve()
    server_url = DataCenter.url(on_server) if data_center else None
    messages, truth, duplicates, swaps = publish_order(builds, rng, repos, server_url)
    figures = Figures(builds, len(messages), duplicates, swaps, credentials=credentials)
    bitbucket = Bitbucket(fault_rate=fault_rate, faults=FAULTS, fault_delay=0.3, seed=seed, budget=budget)
    bitbucket.budget_window = window
    document: list[dict[str, Any]] = []
    for n in range(credentials):
        token = f"{TOKEN}-{n}"
        served = repos[n::credentials]  # one token for all, or one per repository
        bitbucket.accept_token(token, set(served) if credentials > 1 else None)
        document.append({"token": token} if credentials == 1 else {"token": token, "repositories": served})
        remember_secret(token)
    if data_center:
        document.append({"server": server_url, "token": SERVER_TOKEN})
    if budget:
        figures.budget = f"budget {budget} calls per {window:g} s each"
    server = bitbucket.serve()
    env = {
        "BITBUCKET_API_URL": server.api_url,
        "BITBUCKET_CREDENTIALS": json.dumps(document),
        "HTTP_TIMEOUT_SECONDS": "0.15",
        "HTTP_RETRY_BACKOFF_SECONDS": "0.005",
        "RATE_LIMIT_COOLDOWN_SECONDS": str(window),
    }
    started = time.monotonic()
    pubsub = PubSub([Delivery(0.0, background_event(m), now()) for m in messages], rng, figures, workers)
    pubsub.redelivery_delay = (lambda: rng.uniform(0.2, 1.0) * window) if budget else (lambda: 0.0)
    with environment(env):
        pending, log = pubsub.deliver(deadline)
    server.stop()
    on_server.stop()
    figures.seconds = time.monotonic() - started
    status_calls = [c for c in bitbucket.calls if c.path.startswith("/2.0/")] + server_app.calls
    figures.bitbucket_calls = len(status_calls)
    figures.failed_calls = sum(1 for c in status_calls if c.fault or c.status == 429)
    figures.in_progress_dropped = sum(
        1
        for line in log.splitlines()
        if json.loads(line)["message"].startswith("Did not post INPROGRESS")
        and ("429" in line or relay.reporting.BUDGET_SPENT in line)
    )
    figures.server_builds = sum(1 for repo, _ in truth if repo == SERVER_REPOSITORY)
    verify(bitbucket, server_app, truth, pending, deadline)
    return figures


def verify(
    bitbucket: Bitbucket, server: DataCenter, truth: dict[tuple[str, str], str], pending: int, deadline: float
) -> None:
    assert pending == 0, f"{pending} messages were still undelivered after {deadline:.0f} s"
    wrong = {}
    for (repo, commit), state in truth.items():
        site = server if repo == SERVER_REPOSITORY else bitbucket
        shown = [SERVER_STATES.get(s["state"], s["state"]) for s in site.shown(*repo.split("/"), commit)]
        if shown != [state]:
            wrong[(repo, commit)] = (shown, state)
    assert not wrong, f"{len(wrong)} builds end in the wrong state, e.g. {list(wrong.items())[:3]}"
    backwards = bitbucket.went_backwards() + server.went_backwards()
    assert not backwards, f"{len(backwards)} statuses went back to in progress, e.g. {backwards[:2]}"


@dataclass
class OutageFigures:
    commits: int
    builds: int
    messages: int
    duplicates: int
    swaps: int
    on_newest: int = 0  # commits whose status shows their newest build's final state
    to_older: int = 0  # statuses that replaced a newer build's status with an older build's
    deliveries: int = 0
    redeliveries: int = 0
    new_instances: int = 0
    bitbucket_calls: int = 0
    refused_calls: int = 0  # during the outage
    cloud_build_calls: int = 0
    seconds: float = 0.0
    site: str = "Bitbucket Cloud"

    def lines(self) -> list[str]:
        return [
            f"{self.site}: commits {self.commits}, builds {self.builds} (2-3 per commit and trigger, some at once), "
            f"messages published {self.messages} ({self.duplicates} duplicates, {self.swaps} local swaps)",
            f"commits on their newest build's final state {self.on_newest}/{self.commits}, "
            f"statuses replaced by an older build's {self.to_older}",
            f"deliveries {self.deliveries} (redeliveries after a raise {self.redeliveries}), "
            f"new instances {self.new_instances}",
            f"Bitbucket calls {self.bitbucket_calls} ({self.bitbucket_calls / self.builds:.2f} per build, "
            f"{self.refused_calls} refused during the outage), Cloud Build API calls {self.cloud_build_calls}",
            f"time {self.seconds:.1f} s on {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
        ]


def outage(
    commits: int = 60,
    seed: int = 11,
    workers: int = 4,
    deadline: float = 600,
    *,
    data_center: bool = False,
    longest: float = 5.0,
) -> OutageFigures:
    """Triggers fail and are re-run (2-3 builds per commit, some running at once) while Bitbucket refuses
    every call for a window; instances are replaced; then Bitbucket recovers and Pub/Sub's redelivery comes
    in random order, with duplicates. Asserts that every commit ends on its newest build's final state and
    that no status ever went from a newer build to an older one."""

    rng = random.Random(seed)
    base = datetime.now(UTC) - timedelta(hours=2)
    timeline: list[tuple[datetime, dict[str, Any]]] = []
    newest: dict[str, tuple[str, str]] = {}  # commit → (its newest build's id, final state)
    created: dict[str, str] = {}
    server_app = DataCenter(seed=seed)
    server_app.accept_token(SERVER_TOKEN)
    on_server = server_app.serve()
    server_url = DataCenter.url(on_server)
    for c in range(commits):
        commit, start = f"{c + 1:040x}", base + timedelta(seconds=40 * c)
        runs = rng.choice((2, 3))
        for j in range(runs):
            build_id = f"outage-{c}-{j}"
            final = rng.choice(("SUCCESS", "SUCCESS", "FAILURE")) if j == runs - 1 else rng.choice(
                ("FAILURE", "FAILURE", "CANCELLED"))  # fmt: skip
            took = timedelta(seconds=rng.uniform(20, 60))
            created[build_id] = (start).isoformat().replace("+00:00", "Z")
            for status, at in (("QUEUED", start), ("WORKING", start + timedelta(seconds=3)), (final, start + took)):
                message = build(status, build_id, commit=commit, createTime=created[build_id])
                if data_center:
                    message["source"]["gitSource"]["url"] = f"{server_url}/scm/plat/service.git"
                timeline.append((at, message))
            newest[commit] = (build_id, FINALS[final])
            # the re-run starts after this run finished, or (a third of the time) while it is still running
            start += took + timedelta(seconds=5) if rng.random() > 1 / 3 else timedelta(seconds=rng.uniform(4, 15))
    timeline.sort(key=lambda pair: pair[0])
    messages = [m for _, m in timeline]
    published = {id(m): at.isoformat() for at, m in timeline}
    swaps, duplicates = _swap_and_duplicate(messages, rng)
    figures = OutageFigures(commits, len(created), len(messages), duplicates, swaps)
    figures.site = "a Bitbucket Data Center server" if data_center else "Bitbucket Cloud"

    google_app = Google()
    google = google_app.serve()
    bitbucket = Bitbucket(faults=("503",), seed=seed)
    bitbucket.accept_token(TOKEN)
    server = bitbucket.serve()
    with tempfile.TemporaryDirectory() as tmp:
        sa_file = google.service_account_file(Path(tmp))
        google_app.record(*(build("QUEUED", b, createTime=t) for b, t in created.items()))
        document = [{"token": TOKEN}, {"server": server_url, "token": SERVER_TOKEN}]
        env = {
            "BITBUCKET_API_URL": server.api_url,
            "BITBUCKET_CREDENTIALS": json.dumps(document),
            "CLOUD_BUILD_API_ENDPOINT": google.endpoint,
            "LOGGING_API_ENDPOINT": google.endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": str(sa_file),
            "HTTP_TIMEOUT_SECONDS": "0.15",
            "HTTP_RETRY_BACKOFF_SECONDS": "0.005",
        }
        queue = [Delivery(0.0, background_event(m), published[id(m)]) for m in messages]
        pubsub = PubSub(queue, rng, figures, workers)  # type: ignore[arg-type]
        pubsub.redelivery_delay = lambda: rng.uniform(0.3, 1.0)  # Pub/Sub's backoff, during the outage too
        site = server_app if data_center else bitbucket
        started = time.monotonic()

        def outage_window() -> None:
            """Bitbucket refuses every call from the first delivery of 30% of the messages to that of 70%
            (or for `longest` seconds at most)."""
            for share, rate in ((0.3, 1.0), (0.7, 0.0)):
                since = time.monotonic()
                while figures.deliveries - figures.redeliveries < share * len(messages) and (
                    rate == 1.0 or time.monotonic() - since < longest
                ):
                    time.sleep(0.002)
                site.fault_rate = rate

        switch = threading.Thread(target=outage_window)
        switch.start()
        with environment(env):
            pending, _ = pubsub.deliver(deadline)
        switch.join()
    server.stop()
    on_server.stop()
    google.stop()
    figures.seconds = time.monotonic() - started
    assert pending == 0, f"{pending} messages were still undelivered after {deadline:.0f} s"
    calls = [c for c in bitbucket.calls if c.path.startswith("/2.0/")] + server_app.calls
    figures.bitbucket_calls = len(calls)
    figures.refused_calls = sum(1 for c in calls if c.fault)
    figures.cloud_build_calls = google_app.counts["cloudbuild.builds.get"]
    repo = ("PLAT", "service") if data_center else ("acme", "webapp")
    wrong = {}
    for commit, (build_id, state) in newest.items():
        shown = [(SERVER_STATES.get(s["state"], s["state"]), s["url"].split("?")[0].rsplit("/", 1)[-1])
                 for s in site.shown(*repo, commit)]  # fmt: skip
        if shown == [(state, build_id)]:
            figures.on_newest += 1
        else:
            wrong[commit[-4:]] = (shown, (state, build_id))
    older = went_to_older(site.history, created)
    figures.to_older = len(older)
    assert not wrong, (
        f"{len(wrong)} commits do not show their newest build's final state, e.g. {list(wrong.items())[:3]}"
    )
    assert not older, f"{len(older)} statuses went from a newer build to an older one, e.g. {older[:2]}"
    backwards = site.went_backwards()
    assert not backwards, f"{len(backwards)} statuses went back to in progress, e.g. {backwards[:2]}"
    return figures


def main_cli() -> None:
    os.environ["NO_GCE_CHECK"] = "true"  # google-auth never looks for a metadata server: only loopback here
    parser = argparse.ArgumentParser(description="Fault and budget soaks of the function against the stand-in")
    parser.add_argument("--builds", type=int, default=250)
    parser.add_argument("--fault-rate", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--budget-builds", type=int, default=300)
    parser.add_argument("--budget", type=int, default=100, help="calls per credential per window")
    parser.add_argument("--window", type=float, default=5.0, help="seconds")
    parser.add_argument("--outage-commits", type=int, default=100)
    args = parser.parse_args()
    figures = run(args.builds, args.fault_rate, args.seed, data_center=True)
    print("Fault soak passed: every build ends in its true final state; no status ever went back to in progress.")
    for line in figures.lines():
        print("  " + line)
    print(json.dumps(asdict(figures)))
    for data_center in (False, True):
        outage_figures = outage(args.outage_commits, args.seed, data_center=data_center)
        print("Outage soak passed: every commit ends on its newest build's final state; no status went from a "
              "newer build to an older one, nor back to in progress.")  # fmt: skip
        for line in outage_figures.lines():
            print("  " + line)
        print(json.dumps(asdict(outage_figures)))
    for credentials in (1, 10):
        figures = run(args.budget_builds, 0.0, args.seed, repositories=10, credentials=credentials,
                      budget=args.budget, window=args.window)  # fmt: skip
        print(f"Budget soak passed with {credentials} credential(s): every build ends in its true final state; "
              "no status ever went back to in progress.")  # fmt: skip
        for line in figures.lines():
            print("  " + line)
        print(json.dumps(asdict(figures)))


if __name__ == "__main__":
    main_cli()
