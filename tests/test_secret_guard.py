"""The session-wide guard of tests/conftest.py fails a run that prints a credential."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from standins import SEEN_SECRETS, new_secret, remember_basic, remember_secret

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


@pytest.mark.parametrize(
    "value",
    [
        "someone-else",  # a word of prose: it was found inside gs://someone-elses-bucket, failing a correct run
        "webapp-repository-token-1",
        "leaked-token-0123456789",
        "Someone-Elses-Token-Number-0042",
        "bb-access-token-7Qx2",  # too short
        "x" * 100,
        "",
    ],
)
def test_a_test_credential_that_prose_could_hold_is_refused_before_it_is_remembered(value):
    with pytest.raises(ValueError, match="A test credential must be unmistakable"):
        remember_secret("bb-access-token-4cp6vJst0KCsYowA39yaiREq", value)
    assert value not in SEEN_SECRETS
    assert "bb-access-token-4cp6vJst0KCsYowA39yaiREq" not in SEEN_SECRETS  # all or nothing


def test_a_stand_ins_issued_tokens_and_random_credentials_are_remembered():
    issued = {new_secret() for _ in range(200)}
    assert len(issued) == 200
    assert issued <= SEEN_SECRETS
    remember_basic("ci@acme.example", "ATATT3x2u0jdc-t6Z6PLUJwKobIKQJ5")
    assert {
        "ATATT3x2u0jdc-t6Z6PLUJwKobIKQJ5",
        "Y2lAYWNtZS5leGFtcGxlOkFUQVRUM3gydTBqZGMtdDZaNlBMVUp3S29iSUtRSjU=",
    } <= SEEN_SECRETS


ORDINARY_WORD = """
from standins import remember_secret

def test_signs_in_as_someone_else():
    remember_secret("someone-else")
"""
PROSE = """
def test_names_a_bucket():
    print("A build names test reports in gs://someone-elses-bucket")
"""


def test_a_credential_that_is_an_ordinary_word_fails_its_own_test_not_the_session_as_a_leak(tmp_path):
    """Two tests that share a worker: one signs in with a word, the other prints prose that holds it."""
    (tmp_path / "test_a.py").write_text(ORDINARY_WORD)
    (tmp_path / "test_b.py").write_text(PROSE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "A credential appeared in the output of" not in result.stdout
    assert "ValueError: A test credential must be unmistakable" in result.stdout
    assert "test_a.py::test_signs_in_as_someone_else" in result.stdout.split("short test summary info")[1]
    assert "1 failed, 1 passed" in result.stdout
