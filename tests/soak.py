"""Soaks: whole build lifecycles delivered as Pub/Sub delivers them — mostly in
order, with local swaps and duplicates, every raise redelivered later — to one
instance that is replaced now and then.

- the fault soak: a Bitbucket Cloud and a Bitbucket Data Center server (a quarter
  of the builds) that fail a third of their calls;
- the budget soak: a Bitbucket that grants each credential B calls per window of
  W seconds and answers 429 beyond it; 300 builds over 10 repositories, once
  with one credential for all, once with one repository access token each.

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
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import main
from standins import remember_secret
from standins.bitbucket import FAULTS, Bitbucket
from standins.builds import Context, background_event, build, now
from standins.datacenter import DataCenter
from standins.processes import environment

FINALS = {"SUCCESS": "SUCCESSFUL", "FAILURE": "FAILED", "TIMEOUT": "FAILED", "INTERNAL_ERROR": "FAILED",
          "CANCELLED": "STOPPED", "EXPIRED": "STOPPED"}  # fmt: skip
FINAL_WEIGHTS = {"SUCCESS": 60, "FAILURE": 20, "TIMEOUT": 5, "INTERNAL_ERROR": 3, "CANCELLED": 8, "EXPIRED": 4}
TOKEN = "soak-access-token-4f9a"
SERVER_TOKEN = "soak-data-center-token-c3d8"
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
    swaps = 0
    for i in range(len(messages) - 1):  # local swaps: neighbours trade places
        if rng.random() < 0.15:
            messages[i], messages[i + 1] = messages[i + 1], messages[i]
            swaps += 1
    duplicates = 0
    for i in range(len(messages) - 1, -1, -1):  # a duplicate a few places later
        if rng.random() < 0.3:
            messages.insert(min(len(messages), i + rng.randint(1, 6)), messages[i])
            duplicates += 1
    return messages, truth, duplicates, swaps


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
            main._warm = None
            threads = [threading.Thread(target=self._work, args=(started + deadline,)) for _ in range(self.workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            main._warm = None
        return self._pending, log.getvalue()

    def _take(self) -> Delivery | None:
        """The next delivery that is due; now and then the instance is replaced, once it has drained."""
        with self._lock:
            if self._replacing and self._in_flight == 0:
                main._warm = None  # a new instance: cold, with no memory of earlier events
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
            except main.TransientError:
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
        and ("429" in line or main.BUDGET_SPENT in line)
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


def main_cli() -> None:
    parser = argparse.ArgumentParser(description="Fault and budget soaks of the function against the stand-in")
    parser.add_argument("--builds", type=int, default=250)
    parser.add_argument("--fault-rate", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--budget-builds", type=int, default=300)
    parser.add_argument("--budget", type=int, default=100, help="calls per credential per window")
    parser.add_argument("--window", type=float, default=5.0, help="seconds")
    args = parser.parse_args()
    figures = run(args.builds, args.fault_rate, args.seed, data_center=True)
    print("Fault soak passed: every build ends in its true final state; no status ever went back to in progress.")
    for line in figures.lines():
        print("  " + line)
    print(json.dumps(asdict(figures)))
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
