"""`make mutate`: mutation testing with mutmut, one module at a time, and a score for each.

For each module, mutmut changes one thing at a time in its functions (a comparison, a constant, a condition, a
call's argument) and runs the tests that call the changed function, from the test files setup.cfg's [mutate]
section names for the module; a mutant is killed when one of them fails, and survives when all pass. Each module runs
in its own folder, build/mutate/<module>/, made anew each run (so no result of an earlier run stands), with a copy of
the project in which only that module is mutated. The tests run as `make test` runs them, the session-wide secret
guard included (a mutant that prints a credential is killed), but each in one process: mutmut runs mutants side by
side instead of pytest-xdist's workers, and learns which tests call which function in that process.

    python -m tests.mutate relay/reporting.py relay/masking.py
    python -m tests.mutate relay/config.py:report_buckets relay/reporting.py:Reporter._write_report
    python -m tests.mutate --jobs 2 relay/credentials.py

Printed for each module: killed / total (%), the time it took, and each mutant that survived (or that no test
reached): where (file:line, function), its name, and what it changed. `cd build/mutate/<module> && mutmut browse`
shows them again, with `mutmut show NAME` and `mutmut apply NAME`.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutate"
# Not copied into a module's folder: what git, tools and earlier runs leave, and what mutmut makes.
LEFT_OUT = {".git", ".venv", "build", "mutants", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis"}
LEFT_OUT |= {"__pycache__", "setup.cfg"}  # setup.cfg: the folder has its own, with mutmut's section
KILLED = {"killed", "timeout", "caught by type check", "segfault"}  # a test noticed (a timeout: a test hung)
NOT_RUN = {"not checked", "skipped", "check was interrupted by user"}  # left out of the score


@dataclass
class Module:
    path: str  # relay/reporting.py
    function: str = ""  # Reporter._write_report, report_buckets, or "" for all of the module
    tests: list[str] = field(default_factory=list)  # tests/test_reporting.py, ...
    source: str = ""  # the module as mutmut copied it: its lines, however the file changes during the run

    @property
    def name(self) -> str:
        """The module's dotted name, as mutmut's mutant names start."""
        return self.path.removesuffix(".py").replace("/", ".")

    @property
    def mutants(self) -> str:
        """mutmut's pattern of the names of the mutants to run: those of the function, or all of the module."""
        if not self.function:
            return f"{self.name}.*"
        owner, _, function = self.function.rpartition(".")
        mangled = f"xǁ{owner}ǁ{function}" if owner else f"x_{function}"
        return f"{self.name}.{mangled}__mutmut_*"

    @property
    def folder(self) -> Path:
        return WORK / (self.name + (f".{self.function}" if self.function else ""))


@dataclass
class Mutant:
    name: str
    status: str
    where: str  # relay/reporting.py:220 Reporter._write_report
    diff: list[str]  # the lines it changed: "-" the original, "+" the mutant


def tests_by_module() -> dict[str, list[str]]:
    """setup.cfg's [mutate]: each module and the test files that run on its mutants."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg")
    return {module: [f"tests/{name}" for name in files.split()] for module, files in parser["mutate"].items()}


def modules_from(specs: list[str]) -> list[Module]:
    tests = tests_by_module()
    modules = []
    for spec in specs:
        path, _, function = spec.partition(":")
        if path not in tests:
            sys.exit(f"{path} is not in setup.cfg's [mutate]: add it, with the test files of its concern")
        missing = [name for name in tests[path] if not (ROOT / name).is_file()]
        if missing or not (ROOT / path).is_file():
            sys.exit(f"setup.cfg's [mutate] names what is not there: {', '.join(missing or [path])}")
        modules.append(Module(path, function, tests[path]))
    return modules


def prepare(module: Module) -> None:
    """The module's folder: the project (linked; mutmut copies it into mutants/) and a setup.cfg that adds mutmut's
    section to the project's own."""
    shutil.rmtree(module.folder, ignore_errors=True)
    module.folder.mkdir(parents=True)
    module.source = (ROOT / module.path).read_text()
    linked = sorted(p.name for p in ROOT.iterdir() if p.name not in LEFT_OUT)
    for name in linked:
        (module.folder / name).symlink_to(ROOT / name)
    package = module.path.split("/")[0] if "/" in module.path else module.path
    mutmut = {
        "source_paths": [package],
        "only_mutate": [module.path],
        "also_copy": [name for name in linked if name not in (package, "tests")],
        "pytest_add_cli_args": ["-p", "no:cacheprovider"],  # nothing written beside the copy
        "pytest_add_cli_args_test_selection": module.tests,
    }
    # A test that runs `make resync` runs it in the copy: the Makefile's venv there is this one, up to date.
    bin = module.folder / "mutants" / ".venv" / "bin"
    bin.mkdir(parents=True)
    (bin / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin / "python").chmod(0o755)
    (bin / ".installed").touch()
    section = "".join(f"{key} =\n" + "".join(f"    {v}\n" for v in values) for key, values in mutmut.items())
    own = (ROOT / "setup.cfg").read_text()
    (module.folder / "setup.cfg").write_text(f"{own}\n[mutmut]\n{section}")


def run(module: Module, jobs: int | None) -> float:
    """mutmut's run in the module's folder; its output to the terminal, or to mutmut.log when there is none."""
    command = [sys.executable, "-m", "mutmut", "run", *(["--max-children", str(jobs)] if jobs else [])]
    command += [module.mutants] if module.function else []  # the whole module: every mutant, and no list of them
    started = time.monotonic()
    if sys.stdout.isatty():
        code = subprocess.call(command, cwd=module.folder)
    else:
        with open(module.folder / "mutmut.log", "w") as log:
            code = subprocess.call(command, cwd=module.folder, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"mutmut failed on {module.path} (exit {code}): see {module.folder / 'mutmut.log'}")
    return time.monotonic() - started


def results(module: Module) -> list[Mutant]:
    """What became of each mutant, read with mutmut's own API in the module's folder."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    here = Path.cwd()
    os.chdir(module.folder)
    try:
        data = SourceFileMutationData(path=module.path)
        data.load()
        prefix = module.mutants.removesuffix("*")  # the function's, or the module's
        found = []
        for name, code in sorted(data.exit_code_by_key.items(), key=lambda item: _number(item[0])):
            status = status_by_exit_code[code]
            if not name.startswith(prefix) or status in NOT_RUN:
                continue
            diff = [] if status in KILLED else get_diff_for_mutant(name, path=module.path).splitlines()[2:]
            changed = [line for line in diff if line[:1] in "-+"]
            found.append(Mutant(name, status, _where(module, name, changed), changed))
        return found
    finally:
        os.chdir(here)


def _number(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number)


def _where(module: Module, name: str, changed: list[str]) -> str:
    """file:line and the function: the line the mutant changed, found by its text within the function."""
    mangled = name.rpartition(".")[2].partition("__mutmut_")[0]
    owner, function = mangled[1:].split("ǁ")[1:] if mangled.startswith("xǁ") else ("", mangled[2:])
    path, source = module.path, module.source
    scope = ast.parse(source).body
    if owner:
        scope = next((c.body for c in scope if isinstance(c, ast.ClassDef) and c.name == owner), [])
    found = next(
        (f for f in scope if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name == function), None
    )
    shown = ".".join(filter(None, (owner, function)))
    if found is None:
        return f"{path} {shown}"
    lines = source.splitlines()
    removed = next((line[1:].strip() for line in changed if line.startswith("-")), None)
    span = range(found.lineno, (found.end_lineno or found.lineno) + 1)
    line = next((n for n in span if lines[n - 1].strip() == removed), found.lineno)
    return f"{path}:{line} {shown}"


def report(module: Module, mutants: list[Mutant], seconds: float) -> tuple[int, int]:
    killed = sum(m.status in KILLED for m in mutants)
    total = len(mutants)
    left = [m for m in mutants if m.status not in KILLED]
    shown = module.path + (f":{module.function}" if module.function else "")
    print(f"\n== {shown}: {len(left)} mutant{'s' if len(left) != 1 else ''} left ==")
    for mutant in left:
        print(f"\n{mutant.where}  {mutant.status}  ({mutant.name})")
        print("\n".join(f"    {line}" for line in mutant.diff))
    print(f"\n{shown}: {killed} / {total} killed ({_percent(killed, total)}), {seconds:.0f} s, tests: "
          f"{' '.join(Path(t).name for t in module.tests)}")  # fmt: skip
    return killed, total


def _percent(killed: int, total: int) -> str:
    return f"{100 * killed / total:.1f}%" if total else "no mutants"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="+", help="relay/MODULE.py, or relay/MODULE.py:FUNCTION (Class.method)")
    parser.add_argument("--jobs", type=int, default=None, help="mutants run at once (mutmut's default: one a core)")
    args = parser.parse_args()
    scores = []
    for module in modules_from(args.modules):
        print(f"{module.path}{':' + module.function if module.function else ''}: mutating, its tests: "
              f"{' '.join(module.tests)}", flush=True)  # fmt: skip
        prepare(module)
        seconds = run(module, args.jobs)
        scores.append((module, *report(module, results(module), seconds), seconds))
    print("\nScores (killed / total):")
    for module, killed, total, seconds in scores:
        shown = module.path + (f":{module.function}" if module.function else "")
        print(f"  {shown:<45} {killed:>4} / {total:<4} {_percent(killed, total):>7}  {seconds:>5.0f} s")


if __name__ == "__main__":
    main()
