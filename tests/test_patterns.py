"""Bounded work for any text: every regular expression of the function — the matchers, the credential shapes, the
URL, name and key patterns — runs in time linear in its text, on strings made to make a backtracking engine scan
again from each position (repeated `a.`, `a1-`, `b-`, `Zz9.`, each secret word in front, and the pattern's own
literals repeated). A regular expression holds the GIL: one superlinear pattern over a 256 KB log line would stall
every event of the instance. Each pattern gets a fixed budget of processor time per kilobyte, far above what a linear
pattern takes (about a tenth of it); a quadratic one takes seconds."""

from __future__ import annotations

import importlib
import pkgutil
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

import relay
import relay.step_log

try:
    import re._parser as sre_parse  # Python 3.11+
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

SIZE = 8 * 1024  # characters of each hostile string
BUDGET_PER_KB = 0.002  # seconds a pattern may take per kilobyte (search, substitution and full match together)
UNITS = ("a.", "a1-", "b-", "Zz9.", " ", "a:", "a/", "@", "=", "-", "\t", "1", "a", ":/", "'", '"', "(", "[", "a_")
WORDS = ("", "token ", "password=", "secret: ", "api_key=", "passwd:", "access_key ", "Bearer ", "Authorization: ")


def modules() -> list[Any]:
    return [importlib.import_module(f"relay.{m.name}") for m in pkgutil.iter_modules(relay.__path__)]


def module_patterns() -> dict[str, re.Pattern[str]]:
    """Every pattern of the function's modules, each kept as text and compiled by `re` on first use: each `*_RE`,
    the credential shapes, each matcher's (and any a module would compile at import)."""
    found: dict[str, re.Pattern[str]] = {}
    for name, value in (item for module in modules() for item in vars(module).items()):
        if isinstance(value, re.Pattern):
            found[name] = value
        elif name.endswith("_RE") and isinstance(value, str):
            found[name] = re.compile(value)
        elif name.endswith(("_SHAPES", "_SHAPE", "_WORDS")):
            rows = (value,) if isinstance(value, str) else value
            texts = [text for row in rows for text in ((row,) if isinstance(row, str) else row)]
            found.update({f"{name}[{n}]": re.compile(text) for n, text in enumerate(texts)})
    for matcher in relay.step_log.MATCHERS:
        for part in ("pattern", "before", "after", "stop"):
            if text := getattr(matcher, part):
                found[f"{matcher.tool} ({part})"] = re.compile(text)
    return found


def literals(pattern: re.Pattern[str]) -> set[str]:
    """The runs of literal characters in a pattern: what a hostile string repeats to keep it trying."""
    found: set[str] = set()

    def walk(parsed: Any) -> None:
        run = ""
        for op, argument in parsed:
            if op is sre_parse.LITERAL:
                run += chr(argument)
                continue
            if run:
                found.add(run)
            run = ""
            if op is sre_parse.SUBPATTERN:
                walk(argument[-1])
            elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT):
                walk(argument[2])
            elif op is sre_parse.BRANCH:
                for branch in argument[1]:
                    walk(branch)
            elif op is sre_parse.ATOMIC_GROUP:
                walk(argument)
            elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
                walk(argument[1])
        if run:
            found.add(run)

    walk(sre_parse.parse(pattern.pattern, pattern.flags))
    return found


def hostile(pattern: re.Pattern[str]) -> Iterator[str]:
    seeds = {word + unit for word in WORDS for unit in UNITS}
    for literal in sorted(literals(pattern))[:20]:
        seeds |= {literal, *(literal + unit for unit in UNITS[:8]), *(unit + literal for unit in UNITS[:8])}
    for seed in sorted(seeds):
        body = seed * (SIZE // len(seed))
        yield body
        yield "token " + body
        yield "/workspace/src/app.py:" + body


def seconds(pattern: re.Pattern[str], text: str) -> float:
    """The processor time this thread spends: what other processes do to the machine does not count."""
    start = time.thread_time()
    pattern.search(text)
    pattern.sub("", text)
    pattern.fullmatch(text)
    return time.thread_time() - start


PATTERNS = module_patterns()


def test_every_pattern_of_the_function_is_found():
    assert len(PATTERNS) > 40
    assert {"TOKEN_SHAPE[0]", "VALUE_SHAPES[19]", "SHA_RE", "FAILURE_PLACE_RE", "pytest (pattern)", "KEY_RE"} <= set(
        PATTERNS
    )


def test_no_module_compiles_a_pattern_when_it_is_imported():
    """A cold start pays only for the patterns its event uses: each is kept as text (`*_RE`), and `re` compiles it on
    first use and keeps it in its cache."""
    compiled = [f"{m.__name__}.{name}" for m in modules() for name, v in vars(m).items() if isinstance(v, re.Pattern)]
    assert compiled == []


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_a_pattern_takes_time_linear_in_any_text(name):
    pattern, budget = PATTERNS[name], BUDGET_PER_KB * SIZE / 1024
    for text in hostile(pattern):
        # the least of three tries: a busy machine can make one slower, never a linear pattern quadratic
        took = min(seconds(pattern, text) for _ in range(3)) if seconds(pattern, text) > budget else 0.0
        assert took <= budget, f"{name} took {took * 1000:.0f} ms on {text[:40]!r}… ({len(text)} characters)"
