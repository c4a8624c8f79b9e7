"""Load as Pub/Sub's push subscriptions put it on one instance: many push requests at once, each timed from
request to answer; and what the instance's processes spent doing it (CPU seconds, peak resident memory)."""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import requests


def push_all(url: str, bodies: list[dict[str, Any]], senders: int) -> tuple[float, list[float]]:
    """Push every body from `senders` threads at once: (wall seconds, each request's seconds). Every answer must
    be 2xx (a message the function raised for is answered 500, and Pub/Sub would redeliver it)."""
    work: queue.Queue[dict[str, Any]] = queue.Queue()
    for body in bodies:
        work.put(body)
    latencies: list[float] = []
    failed: list[int] = []
    lock = threading.Lock()

    def send() -> None:
        with requests.Session() as session:
            while True:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                answer = session.post(url, json=body, timeout=120)
                with lock:
                    latencies.append(time.perf_counter() - started)
                    if not answer.ok:
                        failed.append(answer.status_code)

    threads = [threading.Thread(target=send) for _ in range(senders)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failed, f"{len(failed)} pushes were not acknowledged: {sorted(set(failed))}"
    return time.perf_counter() - started, latencies


def group_usage(leader: int) -> tuple[float, int]:
    """(CPU seconds, the largest peak resident memory in KiB) of every process in `leader`'s process group:
    functions-framework's gunicorn master and its worker."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu, peak = 0.0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != leader:  # the process group
                continue
            cpu += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
            status = (entry / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return cpu, peak


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
