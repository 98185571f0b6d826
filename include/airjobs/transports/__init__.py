"""How the core reaches hosts. ``local`` (this host) lives here; SSH/SFTP through the Airflow providers'
hooks is registered by the Airflow adapter (``airjobs_airflow.transport_ssh``), so the core never imports
Airflow. A transport works with absolute host paths already confined by ``airjobs.paths.system_path``."""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol


class Transport(Protocol):
    def run(self, command: str, timeout: float = 60) -> tuple[int, str, str]: ...
    def makedirs(self, path: str) -> None: ...
    def write_text(self, path: str, text: str, mode: int = 0o644) -> None: ...
    def read_text(self, path: str) -> str: ...
    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def open_read(self, path: str) -> IO[bytes]: ...
    def open_write(self, path: str) -> IO[bytes]: ...
    def realpath(self, path: str) -> str: ...  # symlinks resolved (on the host)
    def stat(self, path: str) -> FileInfo: ...  # follows symlinks; FileNotFoundError when missing
    def scandir(self, path: str) -> list[FileInfo]: ...  # entries not followed (is_link set for symlinks)
    def remove_tree(self, path: str) -> None: ...


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int
    mtime: float  # seconds since the epoch
    is_dir: bool
    is_link: bool = False


Factory = Callable[[dict[str, Any], str], Transport]
FACTORIES: dict[str, Factory] = {}


def register(protocol: str, factory: Factory) -> None:
    FACTORIES[protocol.upper()] = factory


def _get(system: dict[str, Any], section: str) -> Transport:
    from airjobs.errors import StepError

    part = system.get(section) or {}
    protocol = str(part.get("protocol") or "").upper()
    factory = FACTORIES.get(protocol)
    if factory is None:
        raise StepError(f"System {system['id']} uses protocol {protocol or None}, which this service cannot reach.")
    return factory(system, section)


def storage(system: dict[str, Any]) -> Transport:
    """Files of a system (its ``storage`` section)."""
    return _get(system, "storage")


def execution(system: dict[str, Any]) -> Transport:
    """Commands on an execution system (its ``login`` section); its work directories are reached this way."""
    return _get(system, "login")


CHUNK = 1 << 20

#: ``on_chunk(chunk, size)`` for ``copy``: called after each chunk is written; ``size`` is the length of
#: the file being copied when its source can tell (else None). It may raise to abort the copy.
OnChunk = Callable[[bytes, "int | None"], None]


def copy(
    src: Transport,
    src_path: str,
    dst: Transport,
    dst_path: str,
    on_chunk: OnChunk | None = None,
    follow: Callable[[str], bool] | None = None,
) -> int:
    """Stream a file or a directory tree between two transports (never a whole file in memory). Inside a
    tree, a symbolic link is followed only when ``follow(path)`` says so (it may raise to refuse); without
    ``follow`` links are followed."""
    if src.is_dir(src_path):
        dst.makedirs(dst_path)
        total = 0
        for entry in src.scandir(src_path):
            path = posixpath.join(src_path, entry.name)
            if entry.is_link and follow is not None and not follow(path):
                continue
            total += copy(src, path, dst, posixpath.join(dst_path, entry.name), on_chunk, follow)
        return total
    total = 0
    with src.open_read(src_path) as r, dst.open_write(dst_path) as w:
        size = length(r) if on_chunk is not None else None
        while chunk := r.read(CHUNK):
            w.write(chunk)
            total += len(chunk)
            if on_chunk is not None:
                on_chunk(chunk, size)
    return total


def length(f: Any) -> int | None:
    """The size of an open source file if it can tell cheaply: ``length`` (HTTP Content-Length), an SFTP
    file's ``stat()``, or ``fstat`` of a local file."""
    if getattr(f, "length", None) is not None:
        return int(f.length)
    for probe in (lambda: f.stat().st_size, lambda: os.fstat(f.fileno()).st_size):
        try:
            return int(probe())
        except Exception:
            continue
    return None


class Meter:
    """An ``on_chunk`` that counts and hashes the bytes as they pass, then calls ``tick(meter)``."""

    def __init__(self, tick: Callable[[Meter], None] | None = None):
        self.tick = tick
        self.bytes = 0
        self.size: int | None = None  # of the file being copied, when known
        self.started = time.monotonic()
        self._sha = hashlib.sha256()

    def __call__(self, chunk: bytes, size: int | None) -> None:
        self.bytes += len(chunk)
        self.size = size
        self._sha.update(chunk)
        if self.tick is not None:
            self.tick(self)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def rate(self) -> float:
        """Average bytes per second so far."""
        return self.bytes / max(time.monotonic() - self.started, 1e-6)


def _local(system: dict[str, Any], section: str) -> Transport:
    """This host; on an execution system, as the account jobs run as when the service is root (no job runs as
    root: ``airjobs.config.run_as``), so its commands and the work directories it writes are that account's."""
    from airjobs import config
    from airjobs.transports.local import LocalTransport

    run_as = config.run_as() if str(system.get("type") or "").upper() == "EXECUTION" else None
    return LocalTransport((system.get("storage") or {}).get("rootDir") or "/", run_as=run_as)


register("LOCAL", _local)
