"""SSH/SFTP transport through the Airflow SSH provider's hook (credentials from an Airflow Connection).

One SSH connection per Connection id and process, reused across commands and jobs and reopened when it
dropped; SFTP sessions ride on it (serialised by a lock: paramiko's SFTP client is not thread-safe)."""

from __future__ import annotations

import stat
import threading
from shlex import quote
from typing import Any

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_sftp: dict[str, tuple[Any, Any]] = {}


def _client(conn_id: str):
    with _lock:
        client = _clients.get(conn_id)
        transport = client.get_transport() if client is not None else None
        if transport is None or not transport.is_active():
            from airflow.providers.ssh.hooks.ssh import SSHHook

            client = SSHHook(ssh_conn_id=conn_id).get_conn()
            _clients[conn_id] = client
            _sftp.pop(conn_id, None)
        return client


def _sftp_session(conn_id: str):
    client = _client(conn_id)
    with _lock:
        entry = _sftp.get(conn_id)
        if entry is None or entry[0].get_channel() is None or entry[0].get_channel().closed:
            entry = (client.open_sftp(), threading.RLock())
            _sftp[conn_id] = entry
        return entry


class SSHTransport:
    def __init__(self, conn_id: str):
        self.conn_id = conn_id

    def run(self, command: str, timeout: float = 60) -> tuple[int, str, str]:
        client = _client(self.conn_id)
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode("utf-8", "replace")
        err = stderr.read().decode("utf-8", "replace")
        return stdout.channel.recv_exit_status(), out, err

    def _do(self, fn):
        sftp, lock = _sftp_session(self.conn_id)
        with lock:
            return fn(sftp)

    def makedirs(self, path: str) -> None:
        rc, out, err = self.run(f"mkdir -p {quote(path)}")
        if rc != 0:
            raise OSError(f"mkdir -p {path} failed on {self.conn_id}: {(err or out).strip()}")

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        data = text.encode("utf-8", "surrogateescape")

        def write(sftp):
            tmp = f"{path}.tmp"
            with sftp.open(tmp, "wb") as f:
                f.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, path)

        self._do(write)

    def read_text(self, path: str) -> str:
        def read(sftp):
            with sftp.open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")

        return self._do(read)

    def _stat(self, path: str):
        def st(sftp):
            try:
                return sftp.stat(path)
            except FileNotFoundError:
                return None

        return self._do(st)

    def exists(self, path: str) -> bool:
        return self._stat(path) is not None

    def is_dir(self, path: str) -> bool:
        st = self._stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode or 0)

    def listdir(self, path: str) -> list[str]:
        return sorted(self._do(lambda sftp: sftp.listdir(path)))

    def open_read(self, path: str):
        return _Locked(self, path, "rb")

    def open_write(self, path: str):
        return _Locked(self, path, "wb")


class _Locked:
    """A remote file held under the session's lock for its lifetime (streams in 1 MiB chunks)."""

    def __init__(self, transport: SSHTransport, path: str, mode: str):
        self.sftp, self.lock = _sftp_session(transport.conn_id)
        self.path, self.mode = path, mode

    def __enter__(self):
        self.lock.acquire()
        try:
            self.f = self.sftp.open(self.path, self.mode)
            if "r" in self.mode:
                self.f.prefetch()
        except BaseException:
            self.lock.release()
            raise
        return self.f

    def __exit__(self, *exc):
        try:
            self.f.close()
        finally:
            self.lock.release()


def factory(system: dict[str, Any], section: str) -> SSHTransport:
    conn_id = (system.get(section) or {}).get("connectionId")
    if not conn_id:
        from airjobs.errors import StepError

        raise StepError(f"System {system['id']} names no {section}.connectionId.")
    return SSHTransport(conn_id)
