"""The supervisor's watch over its components and the database (``airjobs.service``), on real processes: a
stand-in component that starts processes the way Airflow's do (executor workers in its process group, which
ignore SIGTERM; task processes in groups of their own; a FORK job in a session of its own), and a scratch
embedded PostgreSQL killed with SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from airjobs import pgserver, service
from conftest import VAR, process_alive

#: the stand-in component: starts a worker, a task and a job, writes their pids to <dir>/<its pid>, waits
FAKE = """
import os, signal, sys, time
out = sys.argv[1]
def child(setup, loop=lambda: None):
    pid = os.fork()
    if pid == 0:
        setup()
        while True:
            loop()
            time.sleep(0.1)
    return pid
parent = os.getpid()
def late_task():  # a worker that took a workload just before its scheduler died starts it just after
    global parent
    if parent and os.getppid() != parent:
        parent = 0
        with open(os.path.join(out, f"{os.getppid()}.late"), "w") as f:
            f.write(str(child(lambda: (signal.signal(signal.SIGTERM, signal.SIG_DFL), os.setpgid(0, 0)))))
worker = child(lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN), late_task)  # like a LocalExecutor worker
task = child(lambda: os.setpgid(0, 0))  # like Airflow's task runner
job = child(os.setsid)  # like a FORK job (setsid nohup)
with open(os.path.join(out, str(os.getpid())), "w") as f:
    f.write(f"{worker} {task} {job}")
while True:
    time.sleep(1)
"""


def _fake(tmp: Path) -> service.Component:
    return service.Component("fake", dict(os.environ), [sys.executable, "-c", FAKE, str(tmp)])


def _children(tmp: Path, pid: int, timeout: float = 10) -> tuple[int, int, int]:
    deadline = time.monotonic() + timeout
    while not (tmp / str(pid)).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.1)
    worker, task, job = map(int, (tmp / str(pid)).read_text().split())
    return worker, task, job


@pytest.fixture(autouse=True)
def _no_pid_files_left():
    yield
    for name in ("fake", "quitter"):  # the stand-ins' pid files (``_start``) must not look like components'
        (VAR / "run" / f"{name}.pid").unlink(missing_ok=True)


def _tick_until(c: service.Component, done, timeout: float, db_up: bool = True, db_fault: bool = False):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, c.state
        c.tick(db_up, db_fault)
        time.sleep(0.1)


def test_a_dead_component_is_restarted_after_its_workers_and_tasks_end_but_not_its_jobs(tmp_path, capsys):
    c = _fake(tmp_path)
    c.start()
    first = c.proc.pid
    worker, task, job = _children(tmp_path, first)
    assert set(service.session_members(first)) == {first, worker, task}  # the job left the session
    os.kill(first, signal.SIGKILL)
    t0 = time.monotonic()
    _tick_until(c, lambda: c.proc.pid != first, 20)
    took = time.monotonic() - t0
    late = int(next(tmp_path.glob("*.late")).read_text())
    assert not process_alive(worker) and not process_alive(task), "leftovers outlived the restart"
    assert not process_alive(late), "a task process forked after the component died outlived the restart"
    assert process_alive(job), "the FORK job's session was killed"
    assert took < service.LEFTOVER_GRACE, f"the worker ignoring SIGTERM held the restart {took:.1f}s"
    out = capsys.readouterr().out
    assert "[airjobs] fake exited with -9; restarting (logs:" in out
    assert re.search(r"\[airjobs\] fake left [23] processes \(1 of its process group, [12] in groups of their own", out)
    second = c.proc.pid
    worker2, task2, job2 = _children(tmp_path, second)
    t0 = time.monotonic()
    service.stop_all([c])  # the stop `make stop` and Ctrl-C make
    assert not any(process_alive(p) for p in (second, worker2, task2))
    assert time.monotonic() - t0 < 5, "the stop waited out its grace for a worker that ignores SIGTERM"
    assert process_alive(job2)
    for p in (job, job2):
        os.kill(p, signal.SIGKILL)


def test_exits_in_a_row_back_off_unless_the_database_was_at_fault(tmp_path, capsys):
    c = service.Component("quitter", dict(os.environ), [sys.executable, "-c", "raise SystemExit(3)"])
    delays = []
    for _ in range(4):  # the database is fine: each quick exit counts
        c.start()
        c.proc.wait(10)
        c.tick(db_up=True, db_fault=False)
        delays.append(round(c.next_try - time.monotonic()))
        c.next_try = 0  # no waiting in the test
    assert delays == [0, 1, 2, 4] and c.exits == 4
    assert "[airjobs] quitter exited with 3; restarting; in 4s, it keeps exiting" in capsys.readouterr().out
    c.start()
    c.proc.wait(10)
    c.tick(db_up=False, db_fault=True)  # it exited because the database is down: not counted, nor restarted
    assert c.exits == 4 and c.state == "waiting"
    assert "restarting; once the database is back" in capsys.readouterr().out
    for _ in range(5):
        c.tick(db_up=False, db_fault=True)
        assert c.state == "waiting"
    c.tick(db_up=True, db_fault=True)
    assert c.state == "running"  # started as soon as the database is up
    c.proc.wait(10)
    c.started -= service.STABLE  # a run as long as STABLE forgives the exits before
    c.tick(db_up=True, db_fault=False)
    assert c.exits == 1 and c.next_try <= time.monotonic()
    service.stop_all([c], grace=1)


def test_the_database_is_restarted_after_kill_9(capsys):
    pgdata = (VAR / "pg-watched").resolve()
    pgserver.start(pgdata)
    db = service.Database(pgdata)
    assert db.up and not db.tick()
    old = db.pid
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not db.tick():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert db.up and db.pid != old and pgserver.ready(pgdata)
    out = capsys.readouterr().out
    assert f"[airjobs] postgres (pid {old}) exited; restarting (log: {pgdata / 'log'})" in out
    assert f"[airjobs] postgres restarted (pid {db.pid})" in out

    # a server that does not start is tried again, 1 s, 2 s, ... apart, until it does
    auto = pgdata / "postgresql.auto.conf"
    good = auto.read_text()
    auto.write_text("no_such_setting = 1\n" + good)
    os.kill(db.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while db.tries < 2:
        assert not db.tick() and time.monotonic() < deadline
        time.sleep(0.2)
    assert not db.up and 0 < db.next_try - time.monotonic() <= 2  # the second try failed: 2 s to the third
    assert "[airjobs] postgres did not start: " in capsys.readouterr().out
    auto.write_text(good)
    while not db.tick():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert db.up and pgserver.ready(pgdata)
    pgserver.stop(pgdata)
