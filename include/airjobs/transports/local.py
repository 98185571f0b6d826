"""The local host as an execution and storage system, confined to a root directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class LocalTransport:
    def __init__(self, root: str):
        self.root = os.path.realpath(root)

    def _inside(self, path: str) -> str:
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise PermissionError(f"{path} is outside the system root {self.root}")
        return real

    def run(self, command: str, timeout: float = 60) -> tuple[int, str, str]:
        p = subprocess.run(
            ["/bin/sh", "-c", command], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        return p.returncode, p.stdout, p.stderr

    def makedirs(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self._inside(path)

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        self._inside(os.path.dirname(path))
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def read_text(self, path: str) -> str:
        with open(self._inside(path), encoding="utf-8", errors="replace") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return os.path.exists(path) and bool(self._inside(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self._inside(path))

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self._inside(path)))

    def open_read(self, path: str):
        return open(self._inside(path), "rb")

    def open_write(self, path: str):
        self._inside(os.path.dirname(path))
        return open(path, "wb")
