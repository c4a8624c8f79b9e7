"""`make bench`: what the function costs, each row measured side by side with its baseline in one run.

    python -m bench            # full: medians of several runs
    python -m bench --quick    # a short run, so the benchmark cannot rot (make test runs it)

Rows: import time; warm per-event time over TLS against a bare keep-alive POST
(the floor) and a new connection per event (as the original made); Bitbucket
calls per build; credential fetches on the first event and the next 100;
resident memory growth over many warm events.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import py_compile
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

import main
from standins import bitbucket as standin
from standins.builds import Context, background_event, build
from standins.google import Google, Storage
from standins.processes import ROOT, Process, environment, free_port, wait_until
from standins.tls import self_signed

TOKEN = "bench-access-token-5b21"
KMS_KEY = "projects/bench/locations/global/keyRings/r/cryptoKeys/k"
GOOGLE_PREFIXES = ("google.cloud.", "grpc", "google.protobuf", "google.api_core")
ROWS: list[tuple[str, str, str, str, str]] = []  # what, ours, baseline, ratio, target


def row(what: str, ours: str, baseline: str, ratio: str, target: str) -> None:
    ROWS.append((what, ours, baseline, ratio, target))
    print(f"  {what}: {ours} vs {baseline} ({ratio}; target {target})", file=sys.stderr, flush=True)


# --- 1. import --------------------------------------------------------------


def import_ms(statement: str) -> tuple[float, list[str]]:
    """Milliseconds `statement` takes in a fresh interpreter that has imported functions_framework."""
    code = (
        "import functions_framework, sys, time, json\n"
        "before = set(sys.modules)\n"
        f"t = time.perf_counter()\n{statement}\nt = time.perf_counter() - t\n"
        "print(json.dumps([t * 1000, sorted(set(sys.modules) - before)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    ms, modules = json.loads(out.splitlines()[-1])
    return ms, modules


def bench_import(runs: int) -> None:
    # Compared as installed code is: compiled. pip compiles the libraries when it installs them;
    # main.py is compiled here, since PYTHONDONTWRITEBYTECODE may keep Python from caching it.
    py_compile.compile(str(ROOT / "main.py"), doraise=True)
    ours, theirs, loaded = [], [], []
    for _ in range(runs):  # alternated, so both see the same machine
        ms, modules = import_ms("import main")
        ours.append(ms)
        loaded = [m for m in modules if m.startswith(GOOGLE_PREFIXES)]
        theirs.append(import_ms("import google.cloud.kms, google.cloud.storage, requests")[0])
    a, b = statistics.median(ours), statistics.median(theirs)
    row("import main (functions_framework already loaded)", f"{a:.1f} ms", f"{b:.0f} ms eager kms+storage+requests",
        f"{b / a:.0f}x cheaper", ">= 20x; no Google client module")  # fmt: skip
    row("Google client modules loaded by `import main`", str(len(loaded)), "-", "-", "0")


# --- 2. warm event over TLS ----------------------------------------------------------


class NullOut(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def bench_warm(events: int, rounds: int, workdir: Path) -> None:
    cert, _ = self_signed(workdir)
    port = free_port()
    server = keep_alive_standin(port, workdir / "standin.log", cert)
    api = f"https://127.0.0.1:{port}/2.0"
    stats_url = f"https://127.0.0.1:{port}{standin.STATS_PATH}"
    try:
        wait_until(lambda: _reachable(port), 30, "the TLS stand-in")
        env = {
            "BITBUCKET_API_URL": api,
            "BITBUCKET_CREDENTIALS": json.dumps({"token": TOKEN}),
            "REQUESTS_CA_BUNDLE": str(cert),
        }
        with environment(env):
            main._instance = None
            builds = [build("SUCCESS", f"w-{n}", commit=f"{n:040x}") for n in range(events * (rounds + 1))]
            events_in = [(background_event(b), main.translate(b, main.Config())) for b in builds]
            url = [
                f"{api}/repositories/acme/webapp/commit/{b['substitutions']['COMMIT_SHA']}/statuses/build"
                for b in builds
            ]
            headers = {"Authorization": f"Bearer {TOKEN}"}
            session = requests.Session()
            session.verify = str(cert)
            ours, floor, fresh = [], [], []
            # warm-up: the instance, the session and the stand-in
            run_function(events_in[:events], 0, events)
            for n in range(events):
                session.post(url[n], json=events_in[n][1].status.body(), headers=headers, timeout=10)
            stats = requests.Session()  # keep-alive: reading the counters opens no further connection

            def connections() -> int:
                return stats.get(stats_url, verify=str(cert), timeout=10).json()["connections"]

            ours_connections = 0
            for r in range(1, rounds + 1):
                part = slice(r * events, (r + 1) * events)
                before = connections()
                ours.append(run_function(events_in, part.start, part.stop))
                ours_connections += connections() - before
                t = time.perf_counter()
                for n in range(part.start, part.stop):
                    session.post(url[n], json=events_in[n][1].status.body(), headers=headers, timeout=10)
                floor.append((time.perf_counter() - t) / events)
                t = time.perf_counter()
                for n in range(part.start, min(part.stop, part.start + max(20, events // 5))):
                    requests.post(url[n], json=events_in[n][1].status.body(), headers=headers, timeout=10,
                                  verify=str(cert))  # fmt: skip
                fresh.append((time.perf_counter() - t) / min(events, max(20, events // 5)))
            main._instance = None
    finally:
        server.stop()
    a, f, b = statistics.median(ours) * 1000, statistics.median(floor) * 1000, statistics.median(fresh) * 1000
    row("warm final-state event, TLS on loopback", f"{a:.2f} ms", f"{f:.2f} ms bare keep-alive POST (floor)",
        f"{a / f:.2f}x the floor", "<= 1.15x")  # fmt: skip
    row("warm final-state event vs a new connection per event", f"{a:.2f} ms", f"{b:.2f} ms new TLS connection",
        f"{b / a:.2f}x faster", ">= 3x")  # fmt: skip
    row(f"new connections for {events * rounds} warm events (after the first)", str(ours_connections),
        f"{events * rounds} (one per event)", "-", "0 (one connection)")  # fmt: skip


def keep_alive_standin(port: int, log: Path, cert: Path | None = None) -> Process:
    """The stand-in in its own process, under gunicorn, which keeps connections open as Bitbucket does."""
    args = [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--worker-class", "gthread", "--threads", "4", "--keep-alive", "75", "--log-level", "warning"]  # fmt: skip
    if cert:
        args += ["--certfile", str(cert), "--keyfile", str(cert.with_name("standin-key.pem"))]
    env = {**os.environ, "STANDIN_TOKEN": TOKEN}
    return Process([*args, "standins.bitbucket:keep_alive_app()"], log, env)


def run_function(events_in: list[Any], start: int, stop: int) -> float:
    context = Context()
    with contextlib.redirect_stdout(NullOut()):
        t = time.perf_counter()
        for n in range(start, stop):
            main.build_status(events_in[n][0], context)
        return (time.perf_counter() - t) / max(1, stop - start)


def _reachable(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- 3. calls per build -------------------------------------------------------------


def calls_for(order: list[str]) -> int:
    app = standin.Bitbucket(validate=False)
    app.accept_token(TOKEN)
    server = app.serve()
    try:
        env = {"BITBUCKET_API_URL": server.api_url, "BITBUCKET_CREDENTIALS": json.dumps({"token": TOKEN})}
        with environment(env), contextlib.redirect_stdout(NullOut()):
            main._instance = None
            for status in order:
                main.build_status(background_event(build(status)), Context())
            main._instance = None
        assert [s["state"] for s in app.shown("acme", "webapp", build()["substitutions"]["COMMIT_SHA"])] == [
            "SUCCESSFUL"
        ]
        return len(app.calls)
    finally:
        server.stop()


def bench_calls() -> None:
    cases = {
        "normal lifecycle (QUEUED, WORKING, SUCCESS)": ["QUEUED", "WORKING", "SUCCESS"],
        "duplicated lifecycle (each message twice)": ["QUEUED", "QUEUED", "WORKING", "WORKING", "SUCCESS", "SUCCESS"],
        "reordered lifecycle (WORKING, SUCCESS, QUEUED)": ["WORKING", "SUCCESS", "QUEUED"],
    }
    for what, order in cases.items():
        target = "<= 4 (floor 2)" if what.startswith("normal") else "-"
        row(f"Bitbucket calls, {what}", str(calls_for(order)), f"{len(order)} (one POST per message, the original)",
            "-", target)  # fmt: skip


# --- 4. cold first event -------------------------------------------------------------


def bench_cold(workdir: Path) -> None:
    google = Google().serve()
    storage = Storage()
    app = standin.Bitbucket(validate=False)
    app.accept_token(TOKEN)
    app.accept_consumer("bench-consumer", "bench-consumer-secret")
    server = app.serve()
    sa = google.service_account_file(workdir)
    storage.put("bench", "creds.enc", google.app.encrypt(KMS_KEY, json.dumps({"token": TOKEN}).encode()))
    google.app.add_secret_version("projects/bench/secrets/s", json.dumps({"token": TOKEN}).encode())
    google.app.add_secret_version(
        "projects/bench/secrets/oauth",
        json.dumps({"client_id": "bench-consumer", "client_secret": "bench-consumer-secret"}).encode(),
    )
    base = {"BITBUCKET_API_URL": server.api_url, "GOOGLE_APPLICATION_CREDENTIALS": str(sa),
            "BITBUCKET_OAUTH_TOKEN_URL": server.token_url}  # fmt: skip
    sources = {
        "bucket (storage read + KMS decrypt)": {
            "SECRETS_BUCKET": "bench", "SECRETS_OBJECT": "creds.enc", "KMS_CRYPTO_KEY_ID": KMS_KEY,
            "KMS_API_ENDPOINT": google.endpoint, "STORAGE_EMULATOR_HOST": storage.host,
        },
        "Secret Manager (access)": {"CREDENTIALS_SECRET": "projects/bench/secrets/s",
                                    "SECRET_MANAGER_API_ENDPOINT": google.endpoint},
        "OAuth consumer in Secret Manager (access + token)": {"CREDENTIALS_SECRET": "projects/bench/secrets/oauth",
                                                              "SECRET_MANAGER_API_ENDPOINT": google.endpoint},
    }  # fmt: skip

    def fetches() -> int:
        tokens = sum(1 for c in app.calls if c.path == standin.TOKEN_PATH)
        return storage.downloads + sum(google.app.counts[k] for k in ("kms.decrypt", "secretmanager.access")) + tokens

    try:
        for what, env in sources.items():
            with environment({**base, **env}), contextlib.redirect_stdout(NullOut()):
                main._instance = None
                before = fetches()
                main.build_status(background_event(build("SUCCESS", "c-0", commit="c" * 40)), Context())
                first = fetches() - before
                for n in range(1, 101):
                    main.build_status(background_event(build("SUCCESS", f"c-{n}", commit=f"{n:040x}")), Context())
                rest = fetches() - before - first
                main._instance = None
            expected = 2 if "bucket" in what or "OAuth" in what else 1
            row(f"credential fetches, {what}", f"{first} first event, {rest} next 100", "-", "-",
                f"{expected} then 0")  # fmt: skip
    finally:
        server.stop()
        storage.stop()
        google.stop()


# --- 5. memory ---------------------------------------------------------------------


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def bench_memory(events: int, workdir: Path) -> None:
    port = free_port()
    server = keep_alive_standin(port, workdir / "standin-memory.log")
    try:
        wait_until(lambda: _reachable(port), 30, "the stand-in")
        env = {
            "BITBUCKET_API_URL": f"http://127.0.0.1:{port}/2.0",
            "BITBUCKET_CREDENTIALS": json.dumps({"token": TOKEN}),
        }
        encoded = [background_event(build("SUCCESS", f"m-{n}", commit=f"{n:040x}")) for n in range(events + 3000)]
        with environment(env):
            main._instance = None
            run_function([(e, None) for e in encoded], 0, 3000)  # warm: the instance's memory of statuses is full
            gc.collect()
            before = rss_kib()
            run_function([(e, None) for e in encoded], 3000, 3000 + events)
            gc.collect()
            after = rss_kib()
            main._instance = None
    finally:
        server.stop()
    row(f"resident memory growth over {events} warm events", f"{(after - before) / 1024:.2f} MB", "-", "-", "< 1 MB")


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (make test)")
    args = parser.parse_args()
    runs, events, rounds, memory_events = (3, 100, 3, 1000) if args.quick else (9, 1000, 5, 10_000)
    print(f"Benchmark{' (quick)' if args.quick else ''}: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}", file=sys.stderr)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bench_import(runs)
        bench_warm(events, rounds, workdir)
        bench_calls()
        bench_cold(workdir)
        bench_memory(memory_events, workdir)
    print("\n| What | Ours | Baseline | Ratio | Target |\n|---|---|---|---|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    print(f"\n{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{datetime.now(UTC):%Y-%m-%d}; medians of {rounds if not args.quick else 'a few'} rounds")  # fmt: skip


if __name__ == "__main__":
    main_cli()
