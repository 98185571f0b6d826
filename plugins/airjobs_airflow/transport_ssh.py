"""SSH/SFTP transport through the Airflow SSH provider's hook (credentials from an Airflow Connection).

One SSH connection per Connection id and process, reused across commands and jobs and reopened when it
dropped; SFTP sessions ride on it (serialised by a lock: paramiko's SFTP client is not thread-safe).

Files are streamed the way OpenSSH's sftp does it, not with paramiko's file objects: many read requests in
flight (bounded: ``AHEAD`` bytes), writes acknowledged in the background (also ``AHEAD`` bytes at most), in
requests as large as the server says it takes (``limits@openssh.com``; 32 KiB, which every server takes,
otherwise), on an SFTP channel with a larger window and packet size than paramiko's defaults. Connections
are opened without compression unless the Connection asks for it, with TCP_NODELAY, and move to AES-GCM
before their first SFTP session unless the Connection chose its ciphers (``_compress``, ``_nodelay``,
``_prefer_aead``; bench/staging.py measures the result)."""

from __future__ import annotations

import socket
import stat
import struct
import threading
import weakref
from shlex import quote
from typing import Any

import paramiko
from paramiko.sftp import CMD_DATA, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_READ, CMD_STATUS, CMD_WRITE, SFTPError

from airjobs.transports import FileInfo

#: SSH channel window of an SFTP session (paramiko: 2 MiB) and the largest data packet we accept on it
#: (paramiko: 32 KiB): the server may send AHEAD bytes of replies without waiting for window adjustments
WINDOW = 64 << 20
MAX_PACKET = 256 << 10
#: read/write request size every SFTP server takes, and the most we use when the server takes more
SAFE_BLOCK = 32768
MAX_BLOCK = 256 << 10
#: bytes of read requests in flight / of writes not yet acknowledged, per open file, in at most DEPTH requests
AHEAD = 8 << 20
DEPTH = 64

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_sftp: dict[str, _Session] = {}
_aead_wanted: weakref.WeakSet[Any] = weakref.WeakSet()  # connections to move to AES-GCM (_prefer_aead)
_rekey_lock = threading.Lock()


_users: dict[str, set[str]] = {}  # conn_id -> the users its extra assigns it to (read when it connects)


def _client(conn_id: str, guard: bool = False, owner: str | None = None):
    """The cached connection of a Connection; with ``guard`` (a system a non-admin registered) the Connection
    must be one ``owner`` may use (``airjobs.access``: checked at every use, not only when the system was
    registered), the host is checked by the egress guard before connecting, and the address a cached
    connection reached is checked again (another system may have opened it)."""
    from airjobs import access, egress

    with _lock:
        client = _clients.get(conn_id)
        transport = client.get_transport() if client is not None else None
        if transport is None or not transport.is_active():
            from airflow.providers.ssh.hooks.ssh import SSHHook

            # one attempt: the callers retry with their own back-off and record each attempt in the job's history
            hook = SSHHook(ssh_conn_id=conn_id, conn_retry_attempts=1)
            _users[conn_id] = access.connection_users(hook.get_connection(conn_id).extra_dejson)
            if guard and owner not in _users[conn_id]:
                raise PermissionError(f"Connection {conn_id} is not one {owner} may use")
            if guard:
                egress.resolve_checked(hook.remote_host, int(hook.port or 22))
            hook.compress = _compress(hook)
            client = hook.get_conn()
            _nodelay(client)
            if not (hook.ciphers or hook.disabled_algorithms):  # else the Connection chose its algorithms
                _aead_wanted.add(client.get_transport())
            _clients[conn_id] = client
            _sftp.pop(conn_id, None)
        if guard and owner not in _users.get(conn_id, ()):
            raise PermissionError(f"Connection {conn_id} is not one {owner} may use")
        if guard:
            host, port = client.get_transport().getpeername()[:2]
            ip = egress.parse_host(host)
            if ip is not None and (why := egress.refusal(ip, port)):
                raise egress.EgressRefused(
                    f"Connection to {host}:{port} refused by the egress guard: it is {why}. {egress.HOW_TO_ALLOW}"
                )
        return client


def _nodelay(client) -> None:
    """TCP_NODELAY on the connection: SFTP requests and command set-up are small messages answered by the
    server; with Nagle's algorithm each may wait for the (delayed, up to 40 ms) ACK of the one before."""
    try:
        client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # not a TCP socket (e.g. a ProxyCommand)
        pass


def _compress(hook) -> bool:
    """SSH compression only when the Connection's extra asks for it (``"compress": true``), as OpenSSH does.
    The SSH provider compresses unless told not to, which makes both ends zlib every byte: input data is
    mostly compressed or binary already, and staging 1 GiB over loopback ran several times slower with it."""
    extra = hook.get_connection(hook.ssh_conn_id).extra_dejson
    return str(extra.get("compress", "false")).lower() == "true"


class _SFTPClient(paramiko.SFTPClient):
    """paramiko's SFTP client with linear-time packet I/O. paramiko reads each SFTP packet with two small
    ``recv`` calls, and each one shifts all the data still buffered on the channel (``del buffer[:n]``): with
    many replies in flight that is quadratic. Here the channel is drained in large reads and packets are cut
    from a local buffer; writes send slices of a memoryview instead of re-copying the rest each time."""

    RECV = 16 << 20  # at most this much per recv: usually all the channel holds

    def __init__(self, sock):
        self._in = bytearray()
        self._in_pos = 0
        super().__init__(sock)

    def _read_packet(self):
        while True:
            have = len(self._in) - self._in_pos
            if have >= 4:
                start = self._in_pos
                size = int.from_bytes(self._in[start : start + 4], "big")
                if size >> 24:  # as paramiko: nothing sane is this large
                    raise SFTPError("Garbage packet received")
                if have >= 4 + size:
                    self._in_pos = start + 4 + size
                    if size == 0:
                        return 0, b""
                    with memoryview(self._in) as view:
                        return view[start + 4], view[start + 5 : start + 4 + size].tobytes()
            if self._in_pos:
                del self._in[: self._in_pos]  # what is left is less than one packet
                self._in_pos = 0
            data = self.sock.recv(self.RECV)
            if not data:
                raise EOFError()
            self._in += data

    def _write_all(self, out):
        view = memoryview(out)
        while len(view):
            n = self.sock.send(view)
            if n <= 0:
                raise EOFError()
            view = view[n:]

    def _numbers(self, fileobj, n: int) -> range:
        """n request ids whose replies go to ``fileobj._async_response`` (as paramiko's _async_request)."""
        with self._lock:
            first = self.request_number
            self.request_number += n
            for num in range(first, first + n):
                self._expecting[num] = fileobj
        return range(first, first + n)

    def read_requests(self, fileobj, handle: bytes, extents: list[tuple[int, int]]) -> range:
        """READ requests for (offset, length) extents, sent in one write (so in few SSH packets)."""
        nums = self._numbers(fileobj, len(extents))
        head = struct.pack(">I", len(handle)) + handle
        self._write_all(
            b"".join(
                struct.pack(">IBI", 21 + len(handle), CMD_READ, num) + head + struct.pack(">QI", offset, length)
                for num, (offset, length) in zip(nums, extents, strict=True)
            )
        )
        return nums

    def write_request(self, fileobj, handle: bytes, offset: int, data) -> int:
        """A WRITE request, its data copied once (paramiko's Message and _send_packet copy it three times)."""
        (num,) = self._numbers(fileobj, 1)
        self._write_all(
            b"".join(
                (
                    struct.pack(">IBII", 21 + len(handle) + len(data), CMD_WRITE, num, len(handle)),
                    handle,
                    struct.pack(">QI", offset, len(data)),
                    data,
                )
            )
        )
        return num


class _Session:
    """An SFTP session, its lock and the request sizes its server takes."""

    def __init__(self, client):
        _prefer_aead(client.get_transport())
        self.sftp = _SFTPClient.from_transport(client.get_transport(), window_size=WINDOW, max_packet_size=MAX_PACKET)
        self.lock = threading.RLock()
        self.read_block, self.write_block = _limits(self.sftp)

    def alive(self) -> bool:
        channel = self.sftp.get_channel()
        return channel is not None and not channel.closed


def _limits(sftp) -> tuple[int, int]:
    """(read, write) request sizes: what the server announces with limits@openssh.com, within
    [SAFE_BLOCK, MAX_BLOCK]; SAFE_BLOCK when it does not say (the request is answered "unsupported")."""
    try:
        t, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
        if t != CMD_EXTENDED_REPLY:
            return SAFE_BLOCK, SAFE_BLOCK
        msg.get_int64()  # max packet length
        read, write = msg.get_int64(), msg.get_int64()
    except (OSError, EOFError, ValueError, SFTPError):
        return SAFE_BLOCK, SAFE_BLOCK
    return tuple(min(max(n, SAFE_BLOCK), MAX_BLOCK) if n else SAFE_BLOCK for n in (read, write))


#: AEAD ciphers: no separate HMAC per packet. paramiko lists them last, after aes*-ctr + hmac-sha2-*
AEAD = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _prefer_aead(t) -> None:
    """Before a connection's first SFTP session, move it to AES-GCM if the server takes it (one key
    re-exchange; if the server does not, the same cipher is negotiated again). Streaming through paramiko
    then costs ~12% less CPU and runs ~20% faster than with its first choice, aes128-ctr with hmac-sha2-256.
    Not done when the Connection chose its algorithms (extra ``ciphers`` or ``disabled_algorithms``)."""
    with _rekey_lock:
        if t not in _aead_wanted:
            return
        _aead_wanted.discard(t)
        options = t.get_security_options()
        first = [c for c in AEAD if c in options.ciphers]
        if first and t.local_cipher not in AEAD:
            options.ciphers = tuple(first + [c for c in options.ciphers if c not in first])
            t.renegotiate_keys()


def _sftp_session(conn_id: str, guard: bool = False, owner: str | None = None) -> _Session:
    client = _client(conn_id, guard, owner)
    with _lock:
        session = _sftp.get(conn_id)
        if session is None or not session.alive():
            session = _Session(client)
            _sftp[conn_id] = session
        return session


def close_all() -> None:
    """Close every cached SSH connection of this process (the next use reconnects)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
        _sftp.clear()
    for client in clients:
        try:
            client.close()
        except Exception:
            pass


def describe(conn_id: str) -> dict[str, Any]:
    """The negotiated algorithms of the cached connection for ``conn_id`` (for benchmarks and logs)."""
    client = _clients.get(conn_id)
    t = client.get_transport() if client is not None else None
    if t is None:
        return {}
    return {
        "cipher_out": t.local_cipher,
        "cipher_in": t.remote_cipher,
        "mac_out": t.local_mac,
        "mac_in": t.remote_mac,
        "compression_out": t.local_compression,
        "compression_in": t.remote_compression,
        "server": t.remote_version,
    }


class SSHTransport:
    def __init__(self, conn_id: str, guard: bool = False, owner: str | None = None):
        self.conn_id = conn_id
        self.guard, self.owner = guard, owner

    def run(self, command: str, timeout: float = 60) -> tuple[int, str, str]:
        client = _client(self.conn_id, self.guard, self.owner)
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode("utf-8", "replace")
        err = stderr.read().decode("utf-8", "replace")
        return stdout.channel.recv_exit_status(), out, err

    def _do(self, fn):
        session = _sftp_session(self.conn_id, self.guard, self.owner)
        with session.lock:
            return fn(session.sftp)

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

    def realpath(self, path: str) -> str:
        return self._do(lambda sftp: sftp.normalize(path))  # the server resolves symlinks

    def stat(self, path: str) -> FileInfo:
        def st(sftp):
            try:
                a = sftp.stat(path)
            except OSError as e:
                if getattr(e, "errno", None) == 2 or isinstance(e, FileNotFoundError):
                    raise FileNotFoundError(path) from None
                raise
            return FileInfo(
                path.rstrip("/").rsplit("/", 1)[-1],
                a.st_size or 0,
                float(a.st_mtime or 0),
                stat.S_ISDIR(a.st_mode or 0),
            )

        return self._do(st)

    def scandir(self, path: str) -> list[FileInfo]:
        def ls(sftp):  # READDIR attributes describe a symlink itself, not its target
            return [
                FileInfo(
                    a.filename,
                    a.st_size or 0,
                    float(a.st_mtime or 0),
                    stat.S_ISDIR(a.st_mode or 0),
                    stat.S_ISLNK(a.st_mode or 0),
                )
                for a in sftp.listdir_attr(path)
            ]

        return sorted(self._do(ls), key=lambda f: f.name)

    def remove_tree(self, path: str) -> None:
        if path.rstrip("/").count("/") < 2:
            raise PermissionError(f"refusing to remove {path!r}")
        rc, out, err = self.run(f"rm -rf -- {quote(path)}")
        if rc != 0:
            raise OSError(f"rm -rf {path} failed on {self.conn_id}: {(err or out).strip()}")

    def open_read(self, path: str):
        return _Locked(self, path, "rb")

    def open_write(self, path: str):
        return _Locked(self, path, "wb")


class _Locked:
    """A remote file on an SFTP session of its own (a channel on the shared SSH connection, opened for it and
    closed with it): a long transfer or a slow download never holds up other users of the connection."""

    def __init__(self, transport: SSHTransport, path: str, mode: str):
        self.conn_id, self.guard, self.owner = transport.conn_id, transport.guard, transport.owner
        self.path, self.mode = path, mode

    def __enter__(self):
        self.session = _Session(_client(self.conn_id, self.guard, self.owner))
        try:
            f = self.session.sftp.open(self.path, self.mode)
            try:
                self.f = (
                    _Reader(self.session.sftp, f, self.session.read_block)
                    if "r" in self.mode
                    else _Writer(self.session.sftp, f, self.session.write_block)
                )
            except BaseException:
                f.close()
                raise
        except BaseException:
            self.session.sftp.close()
            raise
        return self.f

    def __exit__(self, exc_type, exc, tb):
        try:
            self.f.close()
        except Exception:
            if exc_type is None:
                raise  # else the error that ended the copy says more than one closing after it
        finally:
            self.session.sftp.close()


class _Reader:
    """A remote file read front to back with up to AHEAD bytes of read requests in flight (replies may
    come in any order; short replies are asked again for the rest). ``read(n)`` returns n bytes but at
    the end of the file, like a local file."""

    def __init__(self, sftp, f, block: int):
        self.sftp, self.f, self.handle, self.block = sftp, f, f.handle, block
        self.depth = min(DEPTH, max(2, AHEAD // block))
        self._stat = f.stat()
        self.size = self._stat.st_size or 0  # requests go up to here, then one at a time until EOF
        self.pos = 0  # offset of the next byte read() returns
        self.next = 0  # offset of the next request
        self.eof: int | None = None  # where the server said EOF
        self.inflight: dict[int, tuple[int, int]] = {}  # request id -> (offset, length)
        self.arrived: dict[int, bytes] = {}  # offset -> data
        self.gaps: list[tuple[int, int]] = []  # parts of short replies still to ask for
        self.error: BaseException | None = None
        self.closed = False

    def stat(self):
        return self._stat

    def seek(self, offset: int, whence: int = 0) -> int:
        """Start reading at ``offset`` (a byte range); only before the first read."""
        if whence != 0 or offset < 0 or self.inflight or self.arrived or self.pos != self.next:
            raise OSError("this SFTP reader seeks only to an absolute offset before it starts reading")
        self.pos = self.next = offset
        return offset

    def _fill(self) -> None:
        """Ask for what is missing: the rest of short replies, and blocks ahead, in batches of at least a
        quarter of the depth (fewer, fuller SSH packets) unless nothing is in flight."""
        extents, self.gaps = self.gaps, []
        inflight = len(self.inflight) + len(extents)
        if self.depth - inflight >= max(1, self.depth // 4) or not inflight:
            while inflight < self.depth and self.eof is None:
                if self.next >= self.size and inflight:
                    break  # past the size stat() said: one request at a time until EOF
                length = min(self.block, self.size - self.next) if self.next < self.size else self.block
                extents.append((self.next, length))
                self.next += length
                inflight += 1
        if extents:
            for num, extent in zip(self.sftp.read_requests(self, self.handle, extents), extents, strict=True):
                self.inflight[num] = extent

    def _async_response(self, t, msg, num) -> None:
        """Called by paramiko for each reply to our requests (from whichever caller reads it)."""
        offset, length = self.inflight.pop(num)
        if t == CMD_DATA:
            data = msg.get_string()
            if data:
                self.arrived[offset] = data
                if len(data) < length:
                    self.gaps.append((offset + len(data), length - len(data)))
            else:
                self.eof = offset if self.eof is None else min(self.eof, offset)
        elif t == CMD_STATUS:
            try:
                self.sftp._convert_status(msg)
            except EOFError:
                self.eof = offset if self.eof is None else min(self.eof, offset)
            except Exception as e:
                self.error = self.error or e
        else:
            self.error = self.error or SFTPError(f"Expected data, got SFTP message {t}")

    def _piece(self, limit: int) -> bytes:
        if self.closed:
            raise ValueError("read of a closed file")
        while True:
            if self.error is not None:
                raise self.error
            data = self.arrived.pop(self.pos, None)
            if data is not None:
                if len(data) > limit:
                    self.arrived[self.pos + limit] = data[limit:]
                    data = data[:limit]
                self.pos += len(data)
                self._fill()
                return data
            if self.eof is not None and self.pos >= self.eof:
                return b""
            self._fill()
            if not self.inflight:
                raise OSError(f"SFTP read lost the data at offset {self.pos}")
            self.sftp._read_response()  # one reply, handed to whoever asked

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        parts = []
        while size > 0 and (piece := self._piece(size)):
            parts.append(piece)
            size -= len(piece)
        return b"".join(parts)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            while self.inflight:  # replies to come would otherwise reach the next user of the session
                self.sftp._read_response()
        finally:
            self.arrived.clear()
            self.f.close()


class _Writer:
    """A remote file written front to back in requests of ``block`` bytes with up to AHEAD bytes not yet
    acknowledged; an error the server reports is raised by a later write or by close()."""

    def __init__(self, sftp, f, block: int):
        self.sftp, self.f, self.handle, self.block = sftp, f, f.handle, block
        self.depth = min(DEPTH, max(2, AHEAD // block))
        self.offset = 0
        self.pending: set[int] = set()
        self.error: BaseException | None = None
        self.closed = False

    def _async_response(self, t, msg, num) -> None:
        self.pending.discard(num)
        if t == CMD_STATUS:
            try:
                self.sftp._convert_status(msg)
            except Exception as e:
                self.error = self.error or e
        else:
            self.error = self.error or SFTPError(f"Expected status, got SFTP message {t}")

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, data) -> int:
        if self.closed:
            raise ValueError("write to a closed file")
        view = memoryview(data)
        for start in range(0, len(view), self.block):
            while len(self.pending) >= self.depth:
                self.sftp._read_response()
            self._check()
            piece = view[start : start + self.block]
            self.pending.add(self.sftp.write_request(self, self.handle, self.offset, piece))
            self.offset += len(piece)
        return len(view)

    def flush(self) -> None:
        while self.pending:
            self.sftp._read_response()
        self._check()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            while self.pending:
                self.sftp._read_response()
        finally:
            self.f.close()
        self._check()


def factory(system: dict[str, Any], section: str) -> SSHTransport:
    conn_id = (system.get(section) or {}).get("connectionId")
    if not conn_id:
        from airjobs.errors import StepError

        raise StepError(f"System {system['id']} names no {section}.connectionId.")
    return SSHTransport(conn_id, guard=bool(system.get("egressGuard")), owner=system.get("owner"))
