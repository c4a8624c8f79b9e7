from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


ANNOTATIONS_MAX = 100  # a report's annotations: one request on Cloud (its limit per request)
SUMMARY_MAX = 440  # Cloud refuses an annotation's summary over 450 characters


@dataclass(frozen=True)
class Annotation:
    """A message pinned to a file and line of the repository (or to none: the report's own)."""

    path: str | None
    line: int | None
    severity: str  # "error" or "warning"
    message: str
    tool: str

    @property
    def site_severity(self) -> str:
        """As both sites name it (Cloud has CRITICAL and LOW too; Data Center LOW)."""
        return "HIGH" if self.severity == "error" else "MEDIUM"

    def place(self) -> dict[str, Any]:
        """Its file and line, as both sites' bodies spell them (none for the report's own)."""
        return {name: value for name, value in (("path", self.path), ("line", self.line)) if value}

    @property
    def key(self) -> str:
        """A stable id within its report (both sites take an external id)."""
        raw = f"{self.path}:{self.line}:{self.message}".encode("utf-8", "surrogatepass")
        return hashlib.sha1(raw, usedforsecurity=False).hexdigest()[:32]


def merged(*groups: Iterable[Annotation]) -> tuple[Annotation, ...]:
    """Annotations of several sources, one per file and line (the first one found), a file's own only where none
    of its lines has one, errors first (in the order found otherwise), at most ANNOTATIONS_MAX."""
    found: dict[tuple[str | None, int | None], Annotation] = {}
    for annotation in (a for group in groups for a in group):
        if annotation.path is None:
            found[(None, len(found))] = annotation  # the report's own: each its own
        else:
            found.setdefault((annotation.path, annotation.line), annotation)
    lined = {a.path for a in found.values() if a.line is not None}
    kept = [a for a in found.values() if a.path is None or a.line is not None or a.path not in lined]
    kept.sort(key=lambda a: a.severity != "error")
    return tuple(kept[:ANNOTATIONS_MAX])


def repository_path(path: str, directory: str) -> str | None:
    """A path a tool printed, as the repository names it: /workspace/ is the repository's root, a relative path
    starts in the step's `dir`; None for anything outside the repository (another absolute path, `..` past the
    root), under node_modules, or longer than PATH_MAX once joined to the step's `dir`."""
    path = path.removeprefix("file://")
    if len(path) > PATH_MAX or "\\" in path or not path.isprintable() or not re.search(FILE_NAME_RE, path):
        return None
    if posixpath.isabs(path):
        relative = path.removeprefix(WORKSPACE) if path.startswith(WORKSPACE) else None
    elif posixpath.isabs(directory):  # a step's dir may be absolute: only /workspace/... is in the repository
        relative = posixpath.join(directory.removeprefix(WORKSPACE), path) if directory.startswith(WORKSPACE) else None
    else:
        relative = posixpath.join(directory, path)
    if relative is None:
        return None
    normalized = posixpath.normpath(relative)
    if normalized in (".", "") or normalized.startswith(("..", "/")) or "node_modules" in normalized.split("/"):
        return None
    return normalized if len(normalized) <= PATH_MAX else None  # a step's `dir` is joined in: bounded after


WORKSPACE = "/workspace/"  # where Cloud Build checks the repository out
PATH_MAX = 1000  # an annotation's path
# A file's name: with an extension of letters (not a host's port, an address or a time), or a build file's name.
FILE_NAME_RE = r"(?:^|/)(?:[^/]*\.[A-Za-z][A-Za-z0-9]{0,9}|Dockerfile|Makefile|Jenkinsfile)$"
