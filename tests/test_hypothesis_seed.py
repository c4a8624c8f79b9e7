"""The session's Hypothesis profiles (tests/conftest.py): `make test` tries the same examples on every run;
`make fuzz` searches anew each run and prints the seed that repeats it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRAWING = """
import os
from hypothesis import given, strategies as st

@given(st.text())
def test_one(text):
    with open(os.path.join(os.environ["DRAWN"], "one"), "a") as drawn:
        drawn.write(repr(text) + "\\n")

@given(st.integers())
def test_two(number):
    with open(os.path.join(os.environ["DRAWN"], "two"), "a") as drawn:
        drawn.write(repr(number) + "\\n")
"""


def run(tmp_path: Path, name: str, *options: str) -> tuple[str, dict[str, str]]:
    """The header of a session of DRAWING, and what each test drew."""
    drawn = tmp_path / name
    drawn.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         *options, str(tmp_path / "test_drawing.py")],
        cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, "DRAWN": str(drawn)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    return result.stdout, {test.name: test.read_text() for test in drawn.iterdir()}


def test_every_run_of_make_test_tries_the_same_examples_and_says_its_seed(tmp_path):
    (tmp_path / "test_drawing.py").write_text(DRAWING)
    header, first = run(tmp_path, "first", "-n", "2")
    _, second = run(tmp_path, "second", "-n", "0")  # in parallel or not
    assert set(first) == {"one", "two"}
    assert first == second
    assert "hypothesis: profile 'ci', --hypothesis-seed=0" in header


def test_make_fuzz_draws_a_new_seed_each_run_and_the_printed_seed_repeats_it_in_parallel_workers_too(tmp_path):
    (tmp_path / "test_drawing.py").write_text(DRAWING)
    header, fuzzed = run(tmp_path, "fuzzed", "-n", "2", "--hypothesis-profile=fuzz")
    [seed] = re.findall(r"hypothesis: profile 'fuzz', --hypothesis-seed=(\d+)", header)
    _, again = run(tmp_path, "again", "-n", "0", "--hypothesis-profile=fuzz", f"--hypothesis-seed={seed}")
    assert fuzzed == again
    _, other = run(tmp_path, "other", "-n", "0", "--hypothesis-profile=fuzz")
    assert other != fuzzed  # another seed (one in 2**32 draws the same)
