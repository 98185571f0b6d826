"""What an app runs: the sha256 of every file in its deployment folder.

A public app is run by every user, so nobody but its owner may change what it runs. Jobs never write into a
deployment folder (``access.check_archive_target``); beyond that, the checksums recorded when the app is
published or updated (``assetChecksums`` in its description) are compared with the folder before each job
copies it, and a job of an app whose assets changed since fails with a message naming the files.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

from airjobs import transports
from airjobs.paths import host_path

MAX_FILES = 10_000


def fingerprint(app: dict[str, Any], deploy: dict[str, Any]) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below the app's deployment folder ({} when it is missing)."""
    t = transports.storage(deploy)
    root = host_path(deploy, app["deploymentPath"])
    if not t.exists(root):
        return {}
    if not t.is_dir(root):
        return {posixpath.basename(root): _sha256(t, root)}
    out: dict[str, str] = {}
    todo = [""]
    while todo:
        rel = todo.pop()
        for entry in t.scandir(posixpath.join(root, rel) if rel else root):
            path = posixpath.join(rel, entry.name) if rel else entry.name
            full = posixpath.join(root, path)
            if entry.is_dir or (entry.is_link and t.is_dir(full)):
                todo.append(path)
            else:
                out[path] = _sha256(t, full)
            if len(out) > MAX_FILES:
                raise ValueError(f"app {app.get('id')} has more than {MAX_FILES} asset files")
    return dict(sorted(out.items()))


def _sha256(t: transports.Transport, path: str) -> str:
    h = hashlib.sha256()
    with t.open_read(path) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def changes(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """The files added, removed or changed since ``recorded`` (sorted)."""
    return sorted(p for p in set(recorded) | set(now) if recorded.get(p) != now.get(p))
