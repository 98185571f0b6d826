"""Runs the whole service on the embedded default: ``python -m airjobs.service run|stop|setup|env``.

``run`` starts the embedded PostgreSQL, migrates Airflow's database and the project's tables, creates the
admin user, registers the demo systems and app, then runs api-server, scheduler, dag-processor and
triggerer in the foreground and watches them and the database (``Component``, ``Database``): a component that
exits is restarted once what it left is ended and the database accepts connections, a killed database is
started again. Ctrl-C (or ``stop`` from another shell) stops all of them and the database, restarting nothing.
Everything is written under $AIRJOBS_VAR (default ./var).

HTTPS (``airjobs.tls``): ``AIRJOBS_TLS_CERT`` and ``AIRJOBS_TLS_KEY``, or ``AIRJOBS_TLS=self-signed``, make the
api-server serve HTTPS on ``AIRJOBS_PORT`` (443 for Agave's SDKs, as root); every client inside the service (the
Task SDK's execution API client, the readiness check) then speaks HTTPS and trusts that certificate.

As root, ``setup`` also creates the unprivileged account LOCAL jobs run as (``airjobs.config.run_as``) and keeps
the var dir closed to it: it may pass through the var dir to the work area ``exec/`` but not list it, and the
secrets, the database, the logs and every user's storage stay root's.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from airjobs import config, pgserver, tls
from airjobs.accounts import ensure_run_as_account

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"


def _var() -> Path:
    return config.var_dir()


def _run_dir() -> Path:
    d = _var() / "run"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def _write_private(path: Path, text: str) -> None:
    """A file only the service reads, never readable by others even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def port() -> int:
    return int(os.environ.get("AIRJOBS_PORT", "8080"))


def base_url(host: str = "localhost") -> str:
    """The service's URL for users: ``http://localhost:8080``, ``https://localhost`` on 443 (no default port)."""
    return tls.base_url(tls.settings(), host, port())


class CannotStart(RuntimeError):
    """The service cannot start as configured (the reason is the message)."""


def check_port(host: str = "127.0.0.1") -> None:
    """Fail early, with the reason, when the api-server could not listen on AIRJOBS_PORT."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        s.bind((host, port()))
    except PermissionError:
        raise CannotStart(
            f"port {port()} needs root (or CAP_NET_BIND_SERVICE): run as root, or set AIRJOBS_PORT to a port above 1023"
        ) from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise CannotStart(
                f"port {port()} of {host} is in use by another process (another service?); set "
                f"AIRJOBS_PORT to another port"
            ) from None
        raise
    finally:
        s.close()


def _secrets() -> dict[str, str]:
    path = _var() / "secrets.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key:
                values[key] = value
    if not values.get("AIRFLOW__CORE__FERNET_KEY"):
        from cryptography.fernet import Fernet

        values = {
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        }
        _write_private(path, "".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def code_path(env: dict[str, str]) -> str:
    """``PYTHONPATH`` with this checkout's code first, whichever checkout the venv's ``airjobs.pth`` names."""
    return os.pathsep.join(
        [str(config.CHECKOUT / "include"), str(config.CHECKOUT / "plugins"), *filter(None, [env.get("PYTHONPATH")])]
    )


def environment() -> dict[str, str]:
    """The environment every Airflow process of this service gets."""
    env = dict(os.environ)
    env.update(_secrets())
    env.update(
        {
            "AIRFLOW_HOME": str(config.CHECKOUT),
            "AIRFLOW_CONFIG": str(config.CHECKOUT / "airflow.cfg"),
            "AIRJOBS_VAR": str(_var()),
            "AIRJOBS_PORT": str(port()),
            "AIRJOBS_DB_URL": config.db_url(),
            "XDG_RUNTIME_DIR": env.get("XDG_RUNTIME_DIR") or str(_var() / "xdg"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": code_path(env),
        }
    )
    https = tls.settings()
    if https:
        # the api-server serves the certificate; the Task SDK's client (workers, triggerer, dag-processor) loads
        # [api] ssl_cert as a CA too, and reaches the api-server by a name the certificate has
        env.update(
            {
                "AIRFLOW__API__SSL_CERT": str(https.cert),
                "AIRFLOW__API__SSL_KEY": str(https.key),
                "AIRFLOW__API__BASE_URL": tls.base_url(https, "localhost", port()),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{tls.base_url(https, https.host, port())}/execution/",
            }
        )
    Path(env["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    Path(env["XDG_RUNTIME_DIR"]).chmod(0o700)
    return env


def admin_password() -> str:
    given = os.environ.get("AIRJOBS_ADMIN_PASSWORD")
    path = _var() / "admin-password"
    if given:
        return given
    if path.exists():
        return path.read_text().strip()
    pw = secrets.token_urlsafe(12)
    _write_private(path, pw + "\n")
    return pw


def confine() -> None:
    """Tighten the var dir: the run-as account may pass through it to the work area (``exec/``), not list it nor
    enter the logs and run dirs; the secrets files are 0600, the database dir is PostgreSQL's own 0700 and the
    storage root is 0700 (``airjobs.demo``). Only root (staging, archiving) reaches other users' files."""
    var = _var()
    traverse = 0o011 if os.geteuid() == 0 else 0  # a service that is not root has no account to let through
    var.chmod(var.stat().st_mode & 0o700 | traverse)
    for sub in ("logs", "run"):
        (var / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        (var / sub).chmod(0o700)


def _airflow(env: dict[str, str], *args: str) -> None:
    bindir = Path(sys.executable).parent
    airflow = str(bindir / "airflow") if (bindir / "airflow").exists() else "airflow"
    subprocess.run([airflow, *args], env=env, check=True, stdout=subprocess.DEVNULL)


def setup(extra_users: list[str] | None = None) -> dict[str, str]:
    """Everything before the processes start; idempotent, so a second run reuses what exists."""
    env = environment()
    os.environ.update({k: env[k] for k in ("AIRJOBS_VAR", "AIRJOBS_DB_URL", "XDG_RUNTIME_DIR")})
    t0 = time.monotonic()
    ensure_run_as_account()
    pgserver.start()
    confine()
    from airjobs import db, demo

    db.create_database(pgserver.url("airflow"))
    print(f"[airjobs] PostgreSQL up in {_var() / 'pg'} ({time.monotonic() - t0:.1f}s)", flush=True)
    _airflow(env, "db", "migrate")
    db.migrate()
    demo.register(ADMIN_USER)
    users = [f"{ADMIN_USER}:{admin_password()}:Admin", *(extra_users or [])]
    subprocess.run(
        [sys.executable, "-m", "airjobs_airflow.fab_setup", *[a for u in users for a in ("--user", u)]],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    _airflow(env, "dags", "reserialize")
    print(f"[airjobs] database migrated, demo registered, DAGs parsed ({time.monotonic() - t0:.1f}s)", flush=True)
    return env


def _start(name: str, env: dict[str, str], argv: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``airflow <name>`` (or ``argv``) in a session of its own, its output in logs/<name>.log."""
    logs = _var() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    airflow = str(bindir / "airflow") if (bindir / "airflow").exists() else "airflow"
    out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it; ours is closed below
    proc = subprocess.Popen(
        argv or [airflow, name],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    (_run_dir() / f"{name}.pid").write_text(str(proc.pid))
    return proc


def wait_ready(timeout: float = 180.0, cancelled: Callable[[], bool] = lambda: False) -> None:
    """Until the api-server answers and the scheduler, dag-processor and triggerer report healthy (or
    ``cancelled()``); over HTTPS when the service serves it, verifying its certificate."""
    https = tls.settings()
    url = f"{tls.base_url(https, https.host if https else '127.0.0.1', port())}/api/v2/monitor/health"
    context = tls.client_context(https) if https else None
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if cancelled():
            return
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as r:  # noqa: S310 - http(s) we built
                health = json.load(r)
            states = {k: (v or {}).get("status") for k, v in health.items()}
            if all(states.get(k) == "healthy" for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")):
                return
            last = str(states)
        except Exception as e:  # not up yet
            last = str(e)
        time.sleep(0.5)
    raise TimeoutError(f"airjobs did not become ready in {timeout}s: {last}")


# ---------------------------------------------------------------- the supervisor

#: seconds between a crashed component's SIGTERM to what it left behind and the SIGKILL: for its task processes
#: (they may be inside a section that must not be cut: ``runs.shielded``), and for the rest of its own process
#: group (executor workers, which ignore SIGTERM and only supervise tasks that can no longer report)
LEFTOVER_GRACE = 10.0
GROUP_GRACE = 1.0
#: seconds before the next start of a component that keeps exiting (the n-th exit in a row), and between failed
#: starts of the database
BACKOFF = (0, 1, 2, 4, 8, 16, 30)
#: a component that ran this long before it exited starts again at once (its earlier exits are forgiven)
STABLE = 60.0
#: an exit this soon after the database came back is the database's fault, not the component's
DB_SETTLE = 30.0


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """State, process group, session id and start time (clock ticks after boot) of a process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[2]), int(fields[3]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def session_members(sid: int, born_before: int | None = None) -> list[int]:
    """The live processes of session ``sid`` (started before ``born_before``, clock ticks after boot): a component
    and every process it started, also those that took a process group of their own (Airflow's task processes)
    and those orphaned since; not the ones that left the session (``setsid``: a FORK job's own processes)."""
    found = []
    for d in os.listdir("/proc"):
        if (
            d.isdigit()
            and (st := _stat(int(d)))
            and st[0] != "Z"
            and st[2] == sid
            and (born_before is None or st[3] < born_before)
        ):
            found.append(int(d))
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _say(text: str) -> None:
    print(f"[airjobs] {text}", flush=True)


class Component:
    """One Airflow component the supervisor runs (``airflow <name>``), in a session of its own, restarted when it
    exits. Before the restart, what the dead one left is ended: its LocalExecutor workers (which hold its database
    session, idle in transaction, locking the rows the new scheduler needs) and its task processes (their
    supervisor, the worker, is gone: they can no longer report, and the task's retry would do their work twice).
    The next start waits for the database and backs off (``BACKOFF``) while the component keeps exiting."""

    def __init__(self, name: str, env: dict[str, str], argv: list[str] | None = None):
        self.name, self.env, self.argv = name, env, argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = "waiting"  # running -> ending (leftovers) -> waiting (for its time and the database)
        self.started = self.next_try = self.started_ending = self.kill_at = 0.0
        self.exits = 0  # exits in a row, each soon after its start
        self.termed: set[int] = set()  # what it left that got SIGTERM
        self.killed = False  # what it left got SIGKILL

    @property
    def log(self) -> Path:
        return _var() / "logs" / f"{self.name}.log"

    def _started(self) -> subprocess.Popen[bytes]:
        """Its process, once it has been started (running or ending)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc

    def start(self) -> None:
        self.proc = _start(self.name, self.env, self.argv)
        self.state, self.started = "running", time.monotonic()

    def leftovers(self) -> list[int]:
        """Its live processes: itself while it runs, and what it left once it died (its workers may still fork task
        processes then). Should its pid name a new process since, only the elders of that one are its."""
        if self.proc is None:
            return []
        if self.proc.poll() is None:
            return session_members(self.proc.pid)
        st = _stat(self.proc.pid)
        return session_members(self.proc.pid, st[3] if st and st[0] != "Z" else None)

    def exited(self, db_up: bool, db_fault: bool) -> None:
        """It exited: log it, start ending what it left, and plan the next start (not counted as an exit of
        its own when the database was down or just back: ``db_fault``)."""
        now = time.monotonic()
        if now - self.started >= STABLE:
            self.exits = 0
        if not db_fault:
            self.exits += 1
        delay = BACKOFF[min(self.exits, len(BACKOFF)) - 1] if self.exits and not db_fault else 0
        self.next_try = now + delay
        why = "; once the database is back" if not db_up else (f"; in {delay}s, it keeps exiting" if delay else "")
        proc = self._started()
        _say(f"{self.name} exited with {proc.returncode}; restarting{why} (logs: {self.log})")
        left = self.leftovers()
        if left:
            own = len([p for p in left if (st := _stat(p)) and st[1] == proc.pid])
            _say(
                f"{self.name} left {len(left)} processes ({own} of its process group, {len(left) - own} in "
                f"groups of their own: task processes); ending them"
            )
            _signal(left, signal.SIGTERM)
        self.state, self.started_ending, self.termed, self.killed = "ending", now, set(left), False
        self.kill_at = now + LEFTOVER_GRACE

    def tick(self, db_up: bool, db_fault: bool) -> None:
        """One look at it: notice an exit, end the leftovers, start it when it is time and the database is up."""
        now = time.monotonic()
        if self.state == "running" and self._started().poll() is not None:
            self.exited(db_up, db_fault)
        if self.state == "ending":
            left = self.leftovers()
            if new := [p for p in left if p not in self.termed]:  # forked by a worker since
                _signal(new, signal.SIGTERM)
                self.termed.update(new)
            if now >= self.started_ending + GROUP_GRACE:
                _signal([p for p in left if (st := _stat(p)) and st[1] == self._started().pid], signal.SIGKILL)
            if left and now >= self.kill_at:
                if self.killed:  # not even SIGKILL ends them (stuck in the kernel): start anyway
                    _say(f"{self.name}: processes it left do not end: {' '.join(map(str, left))}")
                    left = []
                else:
                    _say(f"{self.name}: {len(left)} processes it left ignored SIGTERM; killing them")
                    _signal(left, signal.SIGKILL)
                    self.killed, self.kill_at = True, now + 5
            if not left:
                self.state = "waiting"
        if self.state == "waiting" and db_up and now >= self.next_try:
            self.start()


def stop_all(components: list[Component], grace: float = 15.0) -> None:
    """Stop components and everything they started, in parallel: SIGTERM to each one's whole session; once a
    component has exited, SIGKILL to what is left of its process group (idle executor workers ignore SIGTERM);
    its task processes (groups of their own) get until ``grace`` s to end their shielded sections, then SIGKILL."""
    sent: set[int] = set()
    for c in components:
        if c.proc is not None and c.proc.poll() is None:
            sent.update(left := c.leftovers())
            _signal(left, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for c in components:
        if c.proc is not None:
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    while time.monotonic() < deadline:
        remaining = {c: c.leftovers() for c in components}
        if not any(remaining.values()):
            break
        for c, pids in remaining.items():
            if pids and c.proc is not None and c.proc.poll() is not None:  # as before: what is left of its group
                _signal([p for p in pids if (st := _stat(p)) and st[1] == c.proc.pid], signal.SIGKILL)
            _signal([p for p in pids if p not in sent], signal.SIGTERM)  # task processes forked while it stopped
            sent.update(pids)
        time.sleep(0.1)
    for c in components:
        if left := c.leftovers():
            _say(
                f"{c.name}: {len(left)} of its processes did not end in {grace:.0f}s; killing them: "
                + " ".join(f"{p} ({_cmdline(p)[:60]})" for p in left[:5])
            )
            _signal(left, signal.SIGKILL)
        if c.proc is not None and c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(5)
        c.state = "waiting"
    deadline = time.monotonic() + 5
    while any(c.leftovers() for c in components) and time.monotonic() < deadline:
        time.sleep(0.05)


class Database:
    """The embedded PostgreSQL, watched like the components: when its postmaster dies it is started again (its
    crash recovery replays the log), with ``BACKOFF`` between failed tries. ``back_at`` is when it last came back."""

    name = "postgres"

    def __init__(self, pgdata: Path | None = None):
        self.pgdata = (pgdata or config.pg_dir()).resolve()
        self.up = pgserver.running(self.pgdata)
        self.pid = pgserver._pid(self.pgdata)
        self.back_at = time.monotonic()
        self.tries, self.next_try = 0, 0.0

    def tick(self) -> bool:
        """One look; True when it was started again just now."""
        now = time.monotonic()
        if self.up:
            if pgserver.running(self.pgdata):
                return False
            _say(f"{self.name} (pid {self.pid}) exited; restarting (log: {self.pgdata / 'log'})")
            self.up, self.tries, self.next_try = False, 0, now
        if now < self.next_try:
            return False
        try:
            self.pid = int(pgserver.start(self.pgdata))
        except Exception as e:  # any failure to start is retried
            self.tries += 1
            delay = BACKOFF[min(self.tries, len(BACKOFF) - 1)]
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            _say(f"{self.name} did not start: {reason}; next try in {delay}s (log: {self.pgdata / 'log'})")
            self.next_try = now + delay
            return False
        self.up, self.back_at = True, time.monotonic()
        _say(f"{self.name} restarted (pid {self.pid})")
        return True


def run(extra_users: list[str] | None = None) -> int:
    """Set up, start the components and watch them and the database until SIGINT or SIGTERM; stopping stops
    everything, the database last, and nothing is restarted while it stops."""
    https = tls.settings()  # a bad TLS setting or a port it cannot have fails here, before anything starts
    check_port()
    if https:
        what = "self-signed for localhost, 127.0.0.1" if https.self_signed else f"verified as {https.host}"
        _say(f"HTTPS with {https.cert} ({what}; valid until {https.not_after:%Y-%m-%d})")
    env = setup(extra_users)
    stopping = False

    def _terminate(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGTERM, _terminate)
    (_run_dir() / "service.pid").write_text(str(os.getpid()))
    components = [Component(name, env) for name in COMPONENTS]
    try:
        database = Database()
        for c in components:
            c.start()
        try:
            wait_ready(cancelled=lambda: stopping)
        except TimeoutError as e:
            _say(f"{e}; see {_var() / 'logs'}")
        else:
            if not stopping:
                _banner()
        while not stopping:
            time.sleep(0.5)
            database.tick()
            db_fault = not database.up or time.monotonic() - database.back_at < DB_SETTLE
            for c in components:
                if not stopping:
                    c.tick(database.up, db_fault)
    finally:
        _say("stopping")
        stop_all(components)
        for c in components:
            (_run_dir() / f"{c.name}.pid").unlink(missing_ok=True)
        pgserver.stop()
        (_run_dir() / "service.pid").unlink(missing_ok=True)
        _say("stopped")
    return 0


def _banner() -> None:
    https = tls.settings()
    base = base_url()
    pw = admin_password()
    demo = config.CHECKOUT / "include" / "examples" / "demo-job.json"
    curl = f"curl --cacert {https.cert}" if https and https.self_signed else "curl"
    trust = ""
    if https and https.self_signed:
        trust = (
            f"  HTTPS certificate  : {https.cert} (self-signed for localhost, 127.0.0.1). Trust it with\n"
            + "".join(f"    {line}\n" for line in tls.trust_hints(https))
        )
    login = (
        f"{curl} -s -X POST {base}/token -d grant_type=password -d username={ADMIN_USER} -d password='{pw}'"
        """ | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'"""
    )
    submit = (
        f"""{curl} -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' """
        f"--data-binary @{demo} {base}/jobs/v2"
    )
    mail = (
        "  E-mail notifications: through the smtp_default Connection (AIRFLOW_CONN_SMTP_DEFAULT)\n"
        if os.environ.get("AIRFLOW_CONN_SMTP_DEFAULT")
        else f"  E-mail notifications: no smtp_default Connection set, so kept as .eml files in {_var() / 'mail'}\n"
        "    (set AIRFLOW_CONN_SMTP_DEFAULT, or add the Connection in Airflow, to send them)\n"
    )
    print(
        f"""
[airjobs] ready.
  Airflow UI and API : {base}   (login: {ADMIN_USER} / {pw})
  Agave Jobs API     : {base}/jobs/v2
{trust}{mail}  Submit the demo job:
    TOKEN=$({login}) && {submit}
  Stop with Ctrl-C, or `make stop` from another shell.
""",
        flush=True,
    )


def _ours(pid: int) -> bool:
    """Is ``pid`` a process of this service (an ``airflow`` component or ``python -m airjobs.service``)?"""
    line = _cmdline(pid)
    return "airflow" in line or "airjobs.service" in line


def stop() -> int:
    pidfile = _run_dir() / "service.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(300):
                os.kill(pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:
            pass
    for f in _run_dir().glob("*.pid"):  # a runner that died without cleaning up
        try:
            pid = int(f.read_text())
        except (OSError, ValueError):
            pid = 0
        if pid > 1 and _ours(pid):  # a stale pid file may name a pid the system gave to someone else since
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if f.stem in COMPONENTS:  # and the task processes of its session
                _signal(session_members(pid), signal.SIGKILL)
        f.unlink(missing_ok=True)
    pgserver.stop()
    print("[airjobs] stopped", flush=True)
    return 0


def spawn(
    users: list[str], log_path: Path, env: dict[str, str] | None = None, timeout: float = 300.0
) -> subprocess.Popen[bytes]:
    """Start ``run`` as a background process (for tests and benchmarks); returns once it is ready."""
    args = [sys.executable, "-m", "airjobs.service", "run"]
    for u in users:
        args += ["--user", u]
    log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")  # it shows secrets
    start = log_path.stat().st_size  # a log kept from an earlier run already says "ready."
    base = env or dict(os.environ)
    proc = subprocess.Popen(
        args,
        env={**base, "PYTHONPATH": code_path(base)},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=config.CHECKOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited early; see {log_path}")
        if b"[airjobs] ready." in log_path.read_bytes()[start:]:
            return proc
        time.sleep(0.5)
    terminate(proc)
    raise RuntimeError(f"the service was not ready in {timeout}s; see {log_path}")


def terminate(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Stop a spawned service the way Ctrl-C does; SIGKILL its group if it hangs."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m airjobs.service")
    parser.add_argument("command", choices=["run", "stop", "setup", "env"])
    parser.add_argument("--user", action="append", default=[], help="extra FAB user NAME:PASSWORD:ROLE")
    args = parser.parse_args()
    if args.command == "run":
        try:
            return run(args.user)
        except (tls.TLSConfigError, CannotStart) as e:
            print(f"[airjobs] cannot start: {e}", file=sys.stderr, flush=True)
            return 2
    if args.command == "stop":
        return stop()
    if args.command == "setup":
        setup(args.user)
        return 0
    env = environment()
    for key in (
        "AIRFLOW_HOME",
        "AIRFLOW_CONFIG",
        "AIRJOBS_VAR",
        "AIRJOBS_PORT",
        "AIRJOBS_DB_URL",
        "AIRFLOW__API__SSL_CERT",
        "AIRFLOW__API__SSL_KEY",
        "AIRFLOW__API__BASE_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    ):
        if key in env:
            print(f"export {key}={env[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
