"""How the core reaches hosts. ``local`` (this host) lives here; SSH/SFTP through the Airflow providers'
hooks is registered by the Airflow adapter (``airjobs_airflow.transport_ssh``), so the core never imports
Airflow. A transport works with absolute host paths already confined by ``airjobs.paths.system_path``."""

from __future__ import annotations

import posixpath
from typing import IO, Any, Callable, Protocol


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


def copy(src: Transport, src_path: str, dst: Transport, dst_path: str) -> int:
    """Stream a file or a directory tree between two transports (never a whole file in memory)."""
    if src.is_dir(src_path):
        dst.makedirs(dst_path)
        return sum(copy(src, posixpath.join(src_path, n), dst, posixpath.join(dst_path, n))
                   for n in src.listdir(src_path))
    total = 0
    with src.open_read(src_path) as r, dst.open_write(dst_path) as w:
        while chunk := r.read(CHUNK):
            w.write(chunk)
            total += len(chunk)
    return total


def _local(system: dict[str, Any], section: str) -> Transport:
    from airjobs.transports.local import LocalTransport

    return LocalTransport((system.get("storage") or {}).get("rootDir") or "/")


register("LOCAL", _local)
