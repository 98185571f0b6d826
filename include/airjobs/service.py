"""Runs the whole service on the embedded default: ``python -m airjobs.service run|stop|setup|env``.

``run`` starts the embedded PostgreSQL, migrates Airflow's database and the project's tables, creates the
admin user, registers the demo systems and app, then runs api-server, scheduler, dag-processor and
triggerer in the foreground, restarting any that exits. Ctrl-C (or ``stop`` from another shell) stops all
of them and the database. Everything is written under $AIRJOBS_VAR (default ./var).

As root, ``setup`` also creates the unprivileged account LOCAL jobs run as (``airjobs.config.run_as``) and keeps
the var dir closed to it: it may pass through the var dir to the work area ``exec/`` but not list it, and the
secrets, the database, the logs and every user's storage stay root's.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from airjobs import config, pgserver

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


def ensure_run_as_account() -> str | None:
    """Create the account LOCAL jobs run as when the service runs as root and it does not exist yet (idempotent);
    its name, or None when jobs run as the service user."""
    name = config.run_as()
    if name is None:
        return None
    try:
        pwd.getpwnam(name)
        return name
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    p = subprocess.run([useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
    try:
        pwd.getpwnam(name)  # made by us, or by another service starting at the same time
    except KeyError:
        raise RuntimeError(f"could not create the account {name} that jobs run as: {p.stderr.strip()}") from None
    print(f"[airjobs] created the account {name} that jobs on LOCAL systems run as", flush=True)
    return name


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
        env={**env, "PYTHONPATH": str(config.CHECKOUT / "plugins")},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    _airflow(env, "dags", "reserialize")
    print(f"[airjobs] database migrated, demo registered, DAGs parsed ({time.monotonic() - t0:.1f}s)", flush=True)
    return env


def _start(name: str, env: dict[str, str]) -> subprocess.Popen:
    logs = _var() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    airflow = str(bindir / "airflow") if (bindir / "airflow").exists() else "airflow"
    out = open(logs / f"{name}.log", "ab")
    proc = subprocess.Popen(
        [airflow, name], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (_run_dir() / f"{name}.pid").write_text(str(proc.pid))
    return proc


def _stop_procs(procs: dict[str, subprocess.Popen], timeout: float = 15.0) -> None:
    for p in procs.values():
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for p in procs.values():
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs.values():  # leftovers (an idle LocalExecutor worker may ignore SIGTERM)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for name in procs:
        (_run_dir() / f"{name}.pid").unlink(missing_ok=True)


def wait_ready(timeout: float = 180.0) -> None:
    """Until the api-server answers and the scheduler, dag-processor and triggerer report healthy."""
    import json

    url = f"http://127.0.0.1:{port()}/api/v2/monitor/health"
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                health = json.load(r)
            states = {k: (v or {}).get("status") for k, v in health.items()}
            if all(states.get(k) == "healthy" for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")):
                return
            last = str(states)
        except Exception as e:  # not up yet
            last = str(e)
        time.sleep(0.5)
    raise TimeoutError(f"airjobs did not become ready in {timeout}s: {last}")


def run(extra_users: list[str] | None = None) -> int:
    env = setup(extra_users)
    procs: dict[str, subprocess.Popen] = {}
    stopping = False

    def _terminate(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGTERM, _terminate)
    (_run_dir() / "service.pid").write_text(str(os.getpid()))
    try:
        for name in COMPONENTS:
            procs[name] = _start(name, env)
        try:
            wait_ready()
        except TimeoutError as e:
            print(f"[airjobs] {e}; see {_var() / 'logs'}", flush=True)
        else:
            _banner()
        restarts: dict[str, list[float]] = {n: [] for n in COMPONENTS}
        while not stopping:
            time.sleep(0.5)
            for name, p in list(procs.items()):
                if p.poll() is not None and not stopping:
                    recent = [t for t in restarts[name] if time.monotonic() - t < 60]
                    print(f"[airjobs] {name} exited with {p.returncode}; restarting "
                          f"(logs: {_var() / 'logs' / (name + '.log')})", flush=True)
                    if len(recent) >= 5:
                        print(f"[airjobs] {name} keeps exiting; waiting 10s before the next try", flush=True)
                        time.sleep(10)
                    pgserver.start()  # the usual reason: the database went away
                    restarts[name] = [*recent, time.monotonic()]
                    procs[name] = _start(name, env)
    finally:
        print("[airjobs] stopping", flush=True)
        _stop_procs(procs)
        pgserver.stop()
        (_run_dir() / "service.pid").unlink(missing_ok=True)
        print("[airjobs] stopped", flush=True)
    return 0


def _banner() -> None:
    base = f"http://localhost:{port()}"
    pw = admin_password()
    demo = config.CHECKOUT / "include" / "examples" / "demo-job.json"
    print(
        f"""
[airjobs] ready.
  Airflow UI and API : {base}   (login: {ADMIN_USER} / {pw})
  Agave Jobs API     : {base}/jobs/v2
  Submit the demo job:
    TOKEN=$(curl -s -X POST {base}/token -d grant_type=password -d username={ADMIN_USER} -d password='{pw}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])') && curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' --data-binary @{demo} {base}/jobs/v2
  Stop with Ctrl-C, or `make stop` from another shell.
""",
        flush=True,
    )


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
            os.killpg(int(f.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass
        f.unlink(missing_ok=True)
    pgserver.stop()
    print("[airjobs] stopped", flush=True)
    return 0


def spawn(users: list[str], log_path: Path, env: dict[str, str] | None = None,
          timeout: float = 300.0) -> subprocess.Popen:
    """Start ``run`` as a background process (for tests and benchmarks); returns once it is ready."""
    args = [sys.executable, "-m", "airjobs.service", "run"]
    for u in users:
        args += ["--user", u]
    log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")  # it shows secrets
    proc = subprocess.Popen(args, env=env or dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=config.CHECKOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited early; see {log_path}")
        if b"[airjobs] ready." in log_path.read_bytes():
            return proc
        time.sleep(0.5)
    terminate(proc)
    raise RuntimeError(f"the service was not ready in {timeout}s; see {log_path}")


def terminate(proc: subprocess.Popen, timeout: float = 60.0) -> None:
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
        return run(args.user)
    if args.command == "stop":
        return stop()
    if args.command == "setup":
        setup(args.user)
        return 0
    env = environment()
    for key in ("AIRFLOW_HOME", "AIRFLOW_CONFIG", "AIRJOBS_VAR", "AIRJOBS_PORT", "AIRJOBS_DB_URL"):
        print(f"export {key}={env[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
