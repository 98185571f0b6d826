"""The local host as an execution and storage system, confined to a root directory.

Commands never inherit the service's environment (an Airflow worker's holds the fernet key, the JWT secret and
the database URL): they get a clean one, ``HOME``, ``PATH``, ``USER``, ``LOGNAME`` and the locale.

``run_as`` (an execution system while the service runs as root, ``airjobs.config.run_as``) names the host account
of the system, as the login user is on an SSH host: every command runs with that account's uid and gid and no
supplementary groups, and what is written under the root belongs to it, so a job owns its work directory.
Directories are made by the service (then handed to the account) only inside directories that only root can change;
from the first directory the account owns on, directories and files are created by the account itself, so the
service never writes through a path a job could have bent with a symlink. Reads stay the service's (archiving,
outputs) and check, once the file is open, that what was opened is still inside the root.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import stat as st
import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

from airjobs.transports import FileInfo

#: the ``PATH`` of commands run as the run-as account (the service's own ``PATH`` may name its virtualenv)
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_KEPT = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ")  # settings, never secrets


def job_environment(account: pwd.struct_passwd | None = None) -> dict[str, str]:
    """The whole environment of a command: the account's ``HOME``/``USER`` (or the service user's own, with its
    ``PATH``, when no account is given) and the locale; nothing else of the service's environment."""
    env = {k: os.environ[k] for k in _KEPT if os.environ.get(k)}
    if account is not None:
        env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name, PATH=SAFE_PATH)
        return env
    try:
        me = pwd.getpwuid(os.geteuid())
    except KeyError:
        me = None
    user = me.pw_name if me else os.environ.get("USER", "")
    env.update(HOME=os.environ.get("HOME") or (me.pw_dir if me else "/"), PATH=os.environ.get("PATH") or SAFE_PATH)
    if user:
        env.update(USER=user, LOGNAME=user)
    return env


def _root_only(path: str) -> bool:
    """A directory only root can change (owned by root, writable by nobody else)."""
    try:
        s = os.lstat(path)
    except FileNotFoundError:
        return False
    return st.S_ISDIR(s.st_mode) and s.st_uid == 0 and not s.st_mode & 0o022


def _error(said: bytes | str, path: str) -> OSError:
    """An ``OSError`` of the right kind for what a failed command said (staging sorts errors by kind)."""
    text = (said.decode(errors="replace") if isinstance(said, bytes) else said).strip() or "failed"
    for words, kind, code in (
        ("Permission denied", PermissionError, errno.EACCES),
        ("No such file", FileNotFoundError, errno.ENOENT),
        ("Not a directory", NotADirectoryError, errno.ENOTDIR),
        ("File exists", FileExistsError, errno.EEXIST),
    ):
        if words in text:
            return kind(code, text, path)
    return OSError(errno.EIO, text, path)


class _AccountFile:
    """A file being written by ``cat`` running as the account; the bytes go through a pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], path: str):
        if proc.stdin is None or proc.stderr is None:
            raise ValueError("the writer needs pipes for its stdin and stderr")
        self._proc, self._path = proc, path
        self._stdin, self._stderr = proc.stdin, proc.stderr

    def write(self, data: bytes) -> int:
        try:
            self._stdin.write(data)
        except BrokenPipeError:
            self._finish()
            raise OSError(errno.EPIPE, "the writer ended early", self._path) from None
        return len(data)

    def _finish(self) -> None:
        try:
            self._stdin.close()
        except BrokenPipeError:
            pass
        said = self._stderr.read()
        self._stderr.close()
        if self._proc.wait() != 0:
            raise _error(said, self._path)

    def close(self) -> None:
        if self._proc.returncode is None:
            self._finish()

    def __enter__(self) -> _AccountFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
            return
        try:  # the copy failed: keep what was written (the caller removes partial files), never mask the error
            self.close()
        except OSError:
            pass


class LocalTransport:
    def __init__(self, root: str, run_as: str | None = None):
        self.root = os.path.realpath(root)
        self.run_as = run_as

    # ------------------------------------------------------------ confinement

    def _within(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root + os.sep)

    def _inside(self, path: str) -> str:
        real = os.path.realpath(path)
        if not self._within(real):
            raise PermissionError(f"{path} is outside the system root {self.root}")
        return real

    def _open(self, path: str, flags: int) -> int:
        """A descriptor of ``path``, checked to be inside the root both before and after opening (a symlink
        swapped in between would otherwise lead the service's read anywhere)."""
        fd = os.open(self._inside(path), flags | os.O_CLOEXEC)
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # no /proc: the check before opening stands
            return fd
        if not self._within(where):
            os.close(fd)
            raise PermissionError(f"{path} is outside the system root {self.root}")
        return fd

    # ------------------------------------------------------------ the account

    def account(self) -> pwd.struct_passwd | None:
        """The run-as account's entry (None: commands run as the service user). Never falls back to root."""
        if self.run_as is None:
            return None
        try:
            entry = pwd.getpwnam(self.run_as)
        except KeyError:
            raise PermissionError(
                f"the account {self.run_as} that jobs run as does not exist "
                f"(`python -m airjobs.service setup` creates it)"
            ) from None
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise PermissionError(f"the account {self.run_as} that jobs run as is privileged (uid or gid 0)")
        return entry

    def _identity(self) -> dict[str, Any]:
        """``subprocess`` arguments of a command: the clean environment, and the account when there is one."""
        account = self.account()
        if account is None:
            return {"env": job_environment()}
        return {
            "env": job_environment(account),
            "user": account.pw_uid,
            "group": account.pw_gid,
            "extra_groups": [],
            "umask": 0o077,
            "cwd": "/",
        }

    def _as_account(self, argv: list[str], path: str, data: bytes | None = None, timeout: float = 120) -> None:
        p = subprocess.run(
            argv,
            input=data if data is not None else b"",
            capture_output=True,
            timeout=timeout,
            check=False,
            **self._identity(),
        )
        if p.returncode != 0:
            raise _error(p.stderr or p.stdout, path)

    # ------------------------------------------------------------ commands

    def run(self, command: str, timeout: float = 60) -> tuple[int, str, str]:
        p = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
            **self._identity(),
        )
        return p.returncode, p.stdout, p.stderr

    # ------------------------------------------------------------ writes

    def makedirs(self, path: str) -> None:
        account = self.account()
        if account is None:
            self._inside(path)
            Path(path).mkdir(parents=True, exist_ok=True)
            self._inside(path)
            return
        real = self._inside(path)
        if not os.path.lexists(self.root):  # a new system: its root is the service's to make
            os.makedirs(self.root, 0o711, exist_ok=True)
        rel = os.path.relpath(real, self.root)
        here = self.root
        for part in [] if rel == "." else rel.split(os.sep):
            if not _root_only(here):  # the account's (or anybody's) directory: the account goes on from here
                self._as_account(["mkdir", "-p", "--", real], path)
                break
            here = os.path.join(here, part)
            try:
                os.mkdir(here, 0o700)
            except FileExistsError:
                continue
            os.chown(here, account.pw_uid, account.pw_gid, follow_symlinks=False)
        self._inside(path)

    def write_text(self, path: str, text: str, mode: int = 0o644) -> None:
        self._inside(os.path.dirname(path))
        tmp = f"{path}.tmp"
        if self.account() is not None:
            self._as_account(
                [
                    "/bin/sh",
                    "-c",
                    'cat > "$1" && chmod "$2" "$1" && mv -fT -- "$1" "$3"',
                    "sh",
                    tmp,
                    format(mode, "o"),
                    path,
                ],
                path,
                text.encode("utf-8", "surrogateescape"),
            )
            return
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def open_write(self, path: str) -> IO[bytes]:
        self._inside(os.path.dirname(path))
        if self.account() is not None:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", 'exec cat > "$1"', "sh", path],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **self._identity(),
            )
            return cast(IO[bytes], _AccountFile(proc, path))
        return open(path, "wb")

    def remove_tree(self, path: str) -> None:
        real = self._inside(path)
        if real == self.root:
            raise PermissionError(f"refusing to remove the system root {self.root}")
        shutil.rmtree(real)  # descriptor-based on Linux: it never follows a symlink out of the tree

    # ------------------------------------------------------------ reads (as the service)

    def read_text(self, path: str) -> str:
        with open(self._open(path, os.O_RDONLY), encoding="utf-8", errors="replace") as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return os.path.exists(path) and bool(self._inside(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self._inside(path))

    def listdir(self, path: str) -> list[str]:
        fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def open_read(self, path: str) -> IO[bytes]:
        return open(self._open(path, os.O_RDONLY), "rb")

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def stat(self, path: str) -> FileInfo:
        fd = self._open(path, os.O_PATH)
        try:
            s = os.fstat(fd)
        finally:
            os.close(fd)
        return FileInfo(os.path.basename(path.rstrip("/")), s.st_size, s.st_mtime, st.S_ISDIR(s.st_mode))

    def scandir(self, path: str) -> list[FileInfo]:
        out = []
        fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as it:
                for e in it:
                    s = e.stat(follow_symlinks=False)
                    out.append(FileInfo(e.name, s.st_size, s.st_mtime, st.S_ISDIR(s.st_mode), st.S_ISLNK(s.st_mode)))
        finally:
            os.close(fd)
        return sorted(out, key=lambda f: f.name)
