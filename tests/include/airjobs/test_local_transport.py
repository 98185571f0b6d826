"""The LOCAL transport's part of "no job runs as root" (issue 10, item 9): commands get a clean environment; with a
run-as account (the service is root) they run as it, with no supplementary groups, and what the transport writes
under the root belongs to it, written by it, so a symlink a job plants never bends a write of the service; the
service's reads stay inside the root. The account is ``nobody`` here (no account needs creating); the tests that
need root to change uid are skipped otherwise."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from airjobs import config, transports
from airjobs.schedulers import fork
from airjobs.transports.local import LocalTransport

ROOT = os.geteuid() == 0
as_root = pytest.mark.skipif(not ROOT, reason="changing uid needs root")
SECRET = "fernet-key-that-must-stay-in-the-service"


@pytest.fixture
def area():
    """A system root the account can reach (a 0700 tmp_path would stop it at the door), owned by root."""
    base = Path(tempfile.mkdtemp(prefix="ajlt-", dir="/tmp"))
    base.chmod(0o711)
    (base / "root").mkdir(mode=0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def nobody():
    return pwd.getpwnam("nobody")


def _env(out: str) -> dict[str, str]:
    return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)


@pytest.mark.parametrize("run_as", [None, "nobody"])
def test_commands_never_get_the_services_environment(area, monkeypatch, run_as):
    if run_as and not ROOT:
        pytest.skip("changing uid needs root")
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", SECRET)
    monkeypatch.setenv("AIRJOBS_DB_URL", "postgresql://postgres@/airjobs")
    monkeypatch.setenv("LANG", "C.UTF-8")
    rc, out, _ = LocalTransport(str(area / "root"), run_as=run_as).run("env")
    env = _env(out)
    assert rc == 0
    assert SECRET not in out and "AIRJOBS_DB_URL" not in env and not [k for k in env if k.startswith("AIRFLOW")]
    assert env["PATH"] and env["HOME"] and env["LANG"] == "C.UTF-8"


@as_root
def test_commands_run_as_the_account_without_groups(area, nobody):
    t = LocalTransport(str(area / "root"), run_as="nobody")
    rc, out, err = t.run('id -u; id -G; echo "$HOME $USER"; pwd')
    assert rc == 0, err
    uid, groups, who, cwd = out.splitlines()
    assert int(uid) == nobody.pw_uid and groups.split() == [str(nobody.pw_gid)]
    assert who == f"{nobody.pw_dir} nobody" and cwd == "/"


@as_root
def test_writes_under_the_root_belong_to_the_account(area, nobody):
    root = area / "root"
    t = LocalTransport(str(root), run_as="nobody")
    job = root / "work/alice/job-1"
    t.makedirs(str(job))
    for d in (root / "work", root / "work/alice", job):
        assert d.stat().st_uid == nobody.pw_uid, d
    assert root.stat().st_uid == 0  # what existed stays as it was
    t.makedirs(str(job / "sub/deeper"))  # below the account's own directories, the account makes them
    assert (job / "sub/deeper").stat().st_uid == nobody.pw_uid

    t.write_text(str(job / "run.ipcexe"), "#!/bin/bash\necho hi\n", mode=0o700)
    s = (job / "run.ipcexe").stat()
    assert (s.st_uid, s.st_mode & 0o777) == (nobody.pw_uid, 0o700)
    assert not (job / "run.ipcexe.tmp").exists()
    with t.open_write(str(job / "input.bin")) as f:
        f.write(b"x" * 100000)
        f.write(b"y")
    assert (job / "input.bin").stat().st_uid == nobody.pw_uid
    assert t.open_read(str(job / "input.bin")).read() == b"x" * 100000 + b"y"
    assert t.read_text(str(job / "run.ipcexe")).endswith("echo hi\n")

    rc, _, err = t.run(f"cd {job} && echo out > result.txt && echo 0 > .agave.exitcode && ls")
    assert rc == 0, err  # the job writes its outputs and its exit code into the directory
    assert {"result.txt", "input.bin", "run.ipcexe"} <= set(t.listdir(str(job)))
    assert t.stat(str(job / "result.txt")).size == 4
    assert {e.name for e in t.scandir(str(job))} >= {"result.txt", ".agave.exitcode", "sub"}
    t.remove_tree(str(root / "work/alice"))  # the service (root) still removes it after archiving
    assert not (root / "work/alice").exists()


@as_root
def test_a_planted_symlink_never_bends_a_write_of_the_service(area, nobody):
    root = area / "root"
    t = LocalTransport(str(root), run_as="nobody")
    job = root / "work/bob/job-2"
    t.makedirs(str(job))
    target = area / "root-only.txt"  # a file of root's outside the system root
    target.write_text("untouched\n")
    target.chmod(0o644)
    t.run(f"ln -s {target} {job}/planted.bin && ln -s {target} {job}/planted.txt")

    with pytest.raises(PermissionError), t.open_write(str(job / "planted.bin")) as f:  # the account may not write there
        f.write(b"overwritten")
    t.write_text(str(job / "planted.txt"), "new\n")  # a new file replaces the link
    assert target.read_text() == "untouched\n"
    assert not (job / "planted.txt").is_symlink() and (job / "planted.txt").read_text() == "new\n"
    with pytest.raises(PermissionError):  # the service's reads do not follow it out of the root either
        t.open_read(str(job / "planted.bin"))


@as_root
def test_a_job_started_as_the_account_is_killed_by_it(area, nobody):
    root = area / "root"
    t = LocalTransport(str(root), run_as="nobody")
    job = root / "work/carol/job-3"
    t.makedirs(str(job))
    t.write_text(str(job / "s.ipcexe"), "#!/bin/bash\nsleep 60 &\necho $! > child.pid\nwait\n", mode=0o700)
    rc, out, err = t.run(fork.submit_command(str(job), "s.ipcexe"))
    assert rc == 0, err
    pid = fork.parse_submit(out)
    deadline = time.monotonic() + 10
    while not (job / "child.pid").exists() or not (job / "child.pid").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = (job / "child.pid").read_text().strip()
    assert os.stat(f"/proc/{pid}").st_uid == os.stat(f"/proc/{child}").st_uid == nobody.pw_uid
    rc, _, err = t.run(fork.kill_command(pid))
    assert rc == 0, err
    while fork.parse_status(t.run(fork.status_command([pid, child]))[1]):  # the whole group, children too
        assert time.monotonic() < deadline, "the job or its child survived the kill"
        time.sleep(0.1)


@as_root
def test_never_falls_back_to_root(area):
    for name in ("airjobs-no-such-account", "root"):
        t = LocalTransport(str(area / "root"), run_as=name)
        with pytest.raises(PermissionError):
            t.run("touch /tmp/should-not-exist")
        with pytest.raises(PermissionError):
            t.makedirs(str(area / "root/work"))
    assert not (area / "root/work").exists()


def test_only_execution_systems_get_the_account(area, monkeypatch):
    monkeypatch.setenv("AIRJOBS_RUN_AS", "nobody")
    storage = {"storage": {"protocol": "LOCAL", "rootDir": str(area)}, "login": {"protocol": "LOCAL"}}
    execution = transports.execution({**storage, "id": "x", "type": "EXECUTION"})
    assert execution.run_as == config.run_as() == ("nobody" if ROOT else None)
    assert transports.storage({**storage, "id": "x", "type": "EXECUTION"}).run_as == config.run_as()
    assert transports.storage({**storage, "id": "s", "type": "STORAGE"}).run_as is None
