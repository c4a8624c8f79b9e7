"""The real components the end-to-end tests, the demo and the benchmark run: the Pub/Sub
emulator from the Google Cloud CLI, `functions-framework` serving main.py, and the
Bitbucket stand-in under gunicorn (which keeps connections open, as Bitbucket does).

Each is a child process on a free loopback port, stopped with its whole process
group, so nothing outlives the test or the demo.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from standins import LOGS

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block, as a deployment would, and put them back after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process in its own process group, output to a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            args, stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_ready(self, ready: Any, timeout: float, what: str) -> None:
        """Wait for `ready()`; if the process exits first or is not ready in time, stop it and raise."""

        def check() -> bool:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{what} exited:\n{self.output()[-2000:]}")
            return bool(ready())

        try:
            wait_until(check, timeout, what)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        self._stop(how)
        LOGS.append(self.output())

    def _stop(self, how: signal.Signals) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, how)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._out.close()


class PubSubEmulator:
    """`gcloud beta emulators pubsub start` on loopback, driven through its REST API."""

    def __init__(self, workdir: Path, project: str = "local-project") -> None:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise FileNotFoundError("gcloud is not installed")
        self.project = project
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        data_dir = workdir / "pubsub-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.process = Process(
            [
                gcloud, "beta", "emulators", "pubsub", "start",
                f"--host-port=127.0.0.1:{self.port}", f"--project={project}", f"--data-dir={data_dir}",
                "--quiet",
            ],
            workdir / "pubsub-emulator.log",
        )  # fmt: skip
        self.session = requests.Session()
        self.process.wait_until_ready(self._ready, 60, "the Pub/Sub emulator")

    def _ready(self) -> bool:
        try:
            return self.session.get(f"{self.url}/projects/{self.project}/topics", timeout=1).ok
        except requests.RequestException:
            return False

    def create_topic(self, topic: str) -> str:
        name = f"projects/{self.project}/topics/{topic}"
        response = self.session.put(f"{self.url}/{name}", json={}, timeout=10)
        if response.status_code != 409:
            response.raise_for_status()
        return name

    def create_push_subscription(self, topic: str, subscription: str, endpoint: str) -> str:
        name = f"projects/{self.project}/subscriptions/{subscription}"
        body = {
            "topic": f"projects/{self.project}/topics/{topic}",
            "pushConfig": {"pushEndpoint": endpoint},
            "ackDeadlineSeconds": 10,
            "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "2s"},
        }
        self.session.put(f"{self.url}/{name}", json=body, timeout=10).raise_for_status()
        return name

    def delete_subscription(self, name: str) -> None:
        self.session.delete(f"{self.url}/{name}", timeout=10)

    def publish(self, topic: str, build: dict[str, Any]) -> str:
        """Publish a Build as Cloud Build does: JSON in data, buildId and status as attributes."""
        message = {
            "data": base64.b64encode(json.dumps(build).encode()).decode(),
            "attributes": {"buildId": str(build.get("id")), "status": str(build.get("status"))},
        }
        response = self.session.post(
            f"{self.url}/projects/{self.project}/topics/{topic}:publish", json={"messages": [message]}, timeout=10
        )
        response.raise_for_status()
        return str(response.json()["messageIds"][0])

    def stop(self) -> None:
        self.process.stop()


class FunctionServer:
    """`functions-framework` serving main.py, as the Cloud Functions runtime does: from `folder` (the repository
    unless told), run in it as the runtime runs in the uploaded source, with no PYTHONPATH of the caller's, so
    the function imports only what lies beside its main.py (and the installed requirements)."""

    def __init__(self, target: str, signature: str, env: dict[str, str], log: Path, folder: Path = ROOT) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        framework = Path(sys.executable).with_name("functions-framework")
        withheld = ("BITBUCKET_", "SECRETS_", "KMS_", "PYTHONPATH")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(withheld)}
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        self.process = Process(
            [
                str(framework), f"--target={target}", f"--signature-type={signature}",
                f"--source={folder / 'main.py'}", "--host=127.0.0.1", f"--port={self.port}",
            ],
            log,
            full_env,
            cwd=folder,
        )  # fmt: skip
        self.process.wait_until_ready(self._ready, 30, f"functions-framework ({target})")

    def _ready(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def log_lines(self) -> list[dict[str, Any]]:
        """The function's structured log lines (the framework's own lines are left out)."""
        lines = []
        for line in self.process.output().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines

    def stop(self) -> None:
        # Killed, as Cloud Run may end an instance: gunicorn's graceful stop (SIGTERM) waits about 2 s for idle
        # keep-alive connections and even its quick one 0.5 s, and every line was already written (unbuffered).
        self.process.stop(signal.SIGKILL)


class KeepAliveStandin:
    """The Bitbucket stand-in in its own process, under gunicorn, which keeps connections open as Bitbucket does
    (Werkzeug's server closes each one); it accepts one token, STANDIN_TOKEN. `connections()` is how many it
    has been opened so far."""

    def __init__(self, token: str, log: Path, cert: Path | None = None, latency: float = 0.0, threads: int = 4) -> None:
        self.port = free_port()
        scheme = "https" if cert else "http"
        self.root = f"{scheme}://127.0.0.1:{self.port}"
        self.api_url = f"{self.root}/2.0"
        self.verify: str | bool = str(cert) if cert else True
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        args = [gunicorn, "--bind", f"127.0.0.1:{self.port}", "--workers", "1", "--worker-class", "gthread",
                "--threads", str(threads), "--keep-alive", "75", "--log-level", "warning"]  # fmt: skip
        if cert:
            args += ["--certfile", str(cert), "--keyfile", str(cert.with_name("standin-key.pem"))]
        env = {**os.environ, "STANDIN_TOKEN": token, "STANDIN_LATENCY": str(latency)}
        self.process = Process([*args, "standins.bitbucket:keep_alive_app()"], log, env)
        self.process.wait_until_ready(self._ready, 30, "the keep-alive Bitbucket stand-in")
        self._stats = requests.Session()  # kept alive: reading the counters opens one connection, once

    def _ready(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def connections(self) -> int:
        """Connections the stand-in has been opened so far (reading this counts one, the first time)."""
        from standins.bitbucket import STATS_PATH

        return int(self._stats.get(f"{self.root}{STATS_PATH}", verify=self.verify, timeout=10).json()["connections"])

    def stop(self) -> None:
        self._stats.close()
        self.process.stop(signal.SIGKILL)  # gunicorn's graceful stop waits for idle keep-alive connections
