"""The local host as an execution and storage system, confined to a root directory."""

from __future__ import annotations

import os
import shutil
import stat as st
import subprocess
from pathlib import Path

from airjobs.transports import FileInfo


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

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def stat(self, path: str) -> FileInfo:
        s = os.stat(self._inside(path))
        return FileInfo(os.path.basename(path.rstrip("/")), s.st_size, s.st_mtime, st.S_ISDIR(s.st_mode))

    def scandir(self, path: str) -> list[FileInfo]:
        out = []
        with os.scandir(self._inside(path)) as it:
            for e in it:
                s = e.stat(follow_symlinks=False)
                out.append(FileInfo(e.name, s.st_size, s.st_mtime, st.S_ISDIR(s.st_mode), st.S_ISLNK(s.st_mode)))
        return sorted(out, key=lambda f: f.name)

    def remove_tree(self, path: str) -> None:
        real = self._inside(path)
        if real == self.root:
            raise PermissionError(f"refusing to remove the system root {self.root}")
        shutil.rmtree(real)
