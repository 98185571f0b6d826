"""Path handling that never lets a user-supplied path leave its root."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from airjobs.errors import BadRequest

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(name: str) -> str:
    """Agave's slug of a job name for script and file names (``agave-`` prefix if it starts with a digit)."""
    s = _SLUG.sub("-", name.strip()).strip("-.") or "job"
    if s[0].isdigit():
        s = "agave-" + s
    return s[:64]


def clean_relative(path: str) -> str:
    """Normalise a user path to a relative POSIX path inside its root; refuse escapes and NUL."""
    if "\x00" in path:
        raise BadRequest("Invalid path: contains a NUL byte.")
    parts: list[str] = []
    for part in path.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == ".." or part == "~":
            raise BadRequest(f"Invalid path {path!r}: it may not leave its root directory.")
        parts.append(part)
    return "/".join(parts)


def system_path(root: str, home: str, path: str) -> str:
    """Absolute host path of ``path`` on a system: ``/x`` is under rootDir, ``x`` under homeDir."""
    rel = clean_relative(path) if path.startswith("/") else clean_relative(posixpath.join(home or "/", path))
    full = posixpath.normpath(posixpath.join(root, rel)) if rel else posixpath.normpath(root)
    if not (full == posixpath.normpath(root) or full.startswith(posixpath.normpath(root).rstrip("/") + "/")):
        raise BadRequest(f"Invalid path {path!r}: it may not leave its root directory.")
    return full


def host_path(system: dict[str, Any], path: str) -> str:
    """Absolute host path of ``path`` on ``system`` (its ``storage.rootDir``/``homeDir`` rules, spec §11.2)."""
    storage = system.get("storage") or {}
    return system_path(storage.get("rootDir") or "/", storage.get("homeDir") or "/", path)
