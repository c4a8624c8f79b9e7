"""Fault soak: whole build lifecycles through a Bitbucket that fails a third of
its calls, delivered as Pub/Sub delivers them — mostly in order, with local
swaps and duplicates — and every raise redelivered later.

`make soak` runs it at full size; tests/test_soak.py runs a short one in `make test`.
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
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import main
from standins import remember_secret
from standins.bitbucket import FAULTS, Bitbucket
from standins.builds import Context, background_event, build, now
from standins.processes import environment

FINALS = {"SUCCESS": "SUCCESSFUL", "FAILURE": "FAILED", "TIMEOUT": "FAILED", "INTERNAL_ERROR": "FAILED",
          "CANCELLED": "STOPPED", "EXPIRED": "STOPPED"}  # fmt: skip
FINAL_WEIGHTS = {"SUCCESS": 60, "FAILURE": 20, "TIMEOUT": 5, "INTERNAL_ERROR": 3, "CANCELLED": 8, "EXPIRED": 4}
TOKEN = "soak-access-token-4f9a"


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
    seconds: float = 0.0

    def lines(self) -> list[str]:
        share = self.failed_calls / self.bitbucket_calls if self.bitbucket_calls else 0
        return [
            f"builds {self.builds}, messages published {self.messages} "
            f"({self.duplicates} duplicates = {self.duplicates / self.messages:.0%}, {self.swaps} local swaps)",
            f"deliveries {self.deliveries} (redeliveries after a raise {self.redeliveries}), "
            f"new instances {self.new_instances}",
            f"Bitbucket calls {self.bitbucket_calls}, failed by the stand-in {self.failed_calls} ({share:.0%})",
            f"time {self.seconds:.1f} s on {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
        ]


def publish_order(builds: int, rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, str], int, int]:
    """The messages in the order Pub/Sub hands them out, and each commit's true final state."""
    messages, truth = [], {}
    for n in range(builds):
        final = rng.choices(list(FINAL_WEIGHTS), weights=list(FINAL_WEIGHTS.values()))[0]
        commit = f"{n:040x}"
        statuses = ["QUEUED", final] if final == "EXPIRED" else ["QUEUED", "WORKING", final]
        if rng.random() < 0.1:
            statuses.insert(0, "PENDING")
        messages.extend(build(s, f"soak-{n}", commit=commit) for s in statuses)
        truth[commit] = FINALS[final]
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


def run(builds: int, fault_rate: float = 0.35, seed: int = 7, workers: int = 4, deadline: float = 600) -> Figures:
    rng = random.Random(seed)
    messages, truth, duplicates, swaps = publish_order(builds, rng)
    figures = Figures(builds, len(messages), duplicates, swaps)
    bitbucket = Bitbucket(fault_rate=fault_rate, faults=FAULTS, fault_delay=0.3, seed=seed)
    bitbucket.accept_token(TOKEN)
    server = bitbucket.serve()
    queue: deque[tuple[dict[str, Any], dict[str, Any], str]] = deque((background_event(m), m, now()) for m in messages)
    lock = threading.Lock()
    pending = [len(queue)]
    env = {
        "BITBUCKET_API_URL": server.api_url,
        "BITBUCKET_CREDENTIALS": json.dumps({"token": TOKEN}),
        "HTTP_TIMEOUT_SECONDS": "0.15",
        "HTTP_RETRY_BACKOFF_SECONDS": "0.005",
    }
    remember_secret(TOKEN)
    started = time.monotonic()

    in_flight = [0]
    replacing = [False]

    def take() -> tuple[dict[str, Any], dict[str, Any], str] | None:
        """The next delivery; now and then the instance is replaced, once it has drained."""
        with lock:
            if replacing[0] and in_flight[0] == 0:
                main._instance = None  # a new instance: cold, with no memory of earlier events
                figures.new_instances += 1
                replacing[0] = False
            if replacing[0] or not queue:
                return None
            figures.deliveries += 1
            in_flight[0] += 1
            if rng.random() < 0.02:
                replacing[0] = True
            return queue.popleft()

    def worker() -> None:
        while time.monotonic() - started < deadline:
            item = take()
            if item is None:
                with lock:
                    if pending[0] == 0:
                        return
                time.sleep(0.002)
                continue
            event, _, published = item
            try:
                main.build_status(event, Context(published))
            except main.TransientError:
                with lock:  # Pub/Sub redelivers it later, with its original publish time
                    figures.redeliveries += 1
                    queue.insert(min(len(queue), rng.randint(3, 30)), item)
                    in_flight[0] -= 1
                continue
            with lock:
                pending[0] -= 1
                in_flight[0] -= 1

    with environment(env), contextlib.redirect_stdout(io.StringIO()):
        main._instance = None
        threads = [threading.Thread(target=worker) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        main._instance = None
    server.stop()
    figures.seconds = time.monotonic() - started
    figures.bitbucket_calls = sum(1 for c in bitbucket.calls if c.path.startswith("/2.0/"))
    figures.failed_calls = sum(1 for c in bitbucket.calls if c.path.startswith("/2.0/") and c.fault)
    verify(bitbucket, truth, pending[0], deadline)
    return figures


def verify(bitbucket: Bitbucket, truth: dict[str, str], pending: int, deadline: float) -> None:
    assert pending == 0, f"{pending} messages were still undelivered after {deadline:.0f} s"
    wrong = {}
    for commit, state in truth.items():
        shown = [s["state"] for s in bitbucket.shown("acme", "webapp", commit)]
        if shown != [state]:
            wrong[commit] = (shown, state)
    assert not wrong, f"{len(wrong)} builds end in the wrong state, e.g. {list(wrong.items())[:3]}"
    backwards = bitbucket.went_backwards()
    assert not backwards, f"{len(backwards)} statuses went back to in progress, e.g. {backwards[:2]}"


def main_cli() -> None:
    parser = argparse.ArgumentParser(description="Fault soak of the function against the Bitbucket stand-in")
    parser.add_argument("--builds", type=int, default=250)
    parser.add_argument("--fault-rate", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    figures = run(args.builds, args.fault_rate, args.seed)
    print("Soak passed: every build ends in its true final state; no status ever went back to in progress.")
    for line in figures.lines():
        print("  " + line)
    print(json.dumps(asdict(figures)))


if __name__ == "__main__":
    main_cli()
