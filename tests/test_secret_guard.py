"""The session-wide guard of tests/conftest.py fails a run that prints a credential."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEAKY = """
from standins import remember_secret

def test_prints_a_credential():
    remember_secret("leaked-token-7BNEj9O2jo2BHw0WgcnRBP1l")
    print("Authorization: Bearer leaked-token-7BNEj9O2jo2BHw0WgcnRBP1l")
"""


def test_a_session_that_prints_a_credential_fails_naming_where_not_what(tmp_path):
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert "1 passed" in result.stdout
    assert "A credential appeared in the output of: test_leaky.py::test_prints_a_credential" in result.stdout
    assert "leaked-token-7BNEj9O2jo2BHw0WgcnRBP1l" not in result.stdout.split("A credential appeared")[1]


def test_a_session_with_capture_off_fails_loudly_instead_of_going_blind(tmp_path):
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert "The secret guard cannot see output that is not captured (-s)" in result.stdout


def test_a_credential_printed_in_a_parallel_worker_fails_the_session(tmp_path):
    """make test runs the tests in pytest-xdist workers, where the credentials and the outputs are."""
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "tests.conftest", "--rootdir", str(tmp_path),
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert "1 passed" in result.stdout
    assert "A credential appeared in the output of: test_leaky.py::test_prints_a_credential" in result.stdout
