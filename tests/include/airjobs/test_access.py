"""The access rule (airjobs.access) on its own: homes, published and reserved folders, archive targets,
Connections, grant values and the job rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airjobs import access
from airjobs.errors import BadRequest, Forbidden, NotFound

STORE = {
    "id": "store",
    "type": "STORAGE",
    "owner": "admin",
    "public": True,
    "publishedPaths": ["/samples"],
    "storage": {"protocol": "LOCAL", "rootDir": "/srv/store", "homeDir": "/"},
}
EXEC = {
    "id": "exec",
    "type": "EXECUTION",
    "owner": "admin",
    "public": True,
    "workDir": "/work",
    "storage": {"protocol": "LOCAL", "rootDir": "/srv/exec", "homeDir": "/"},
}
APPS = [{"id": "wc-1.0", "deploymentSystem": "store", "deploymentPath": "/apps/wc-1.0"}]


@pytest.mark.parametrize(
    "path, user, write, ok",
    [
        ("alice/x.txt", "alice", False, True),
        ("alice/x.txt", "alice", True, True),
        ("/alice/deep/er/x", "alice", True, True),
        ("alice", "alice", True, True),
        ("alice2/x", "alice", False, False),  # a prefix of a name is not the home
        ("bob/x", "alice", False, False),
        ("samples/zen.txt", "alice", False, True),
        ("samples/zen.txt", "alice", True, False),  # published folders are read-only
        ("apps/wc-1.0/wc.sh", "alice", False, False),
        ("/", "alice", False, False),
        ("x.txt", "alice", False, False),
        ("bob/x", "admin", True, True),  # the owner of the system
        ("samples/x", "samples", True, False),  # a user named like a published folder owns nothing there
        ("apps/wc-1.0/wc.sh", "apps", False, False),  # ... or like the folder of the apps
    ],
)
def test_storage_paths(path, user, write, ok):
    if ok:
        access.check_path(STORE, path, user, user == "admin", write=write, apps=APPS)
    else:
        with pytest.raises(Forbidden):
            access.check_path(STORE, path, user, user == "admin", write=write, apps=APPS)


def test_a_user_named_like_the_work_area_reads_nobodys_work_directories():
    with pytest.raises(Forbidden):
        access.check_path(EXEC, "work/bob/job-1-x/out.txt", "work", False, write=False)
    access.check_path(EXEC, "bob/mine.txt", "bob", False, write=False)


def test_private_systems_are_their_owners():
    private = {**STORE, "public": False, "owner": "alice"}
    access.check_path(private, "anything/at/all", "alice", False, write=True)
    with pytest.raises(Forbidden):
        access.check_path(private, "bob/x", "bob", False, write=False)
    access.check_path(private, "bob/x", "root", True, write=True)  # admins


@pytest.mark.parametrize("path", ["/apps/wc-1.0", "apps/wc-1.0/sub", "/apps", "/"])
def test_no_archive_overlaps_a_deployment_folder_not_even_an_admins(path):
    with pytest.raises(Forbidden, match=r"deployment folder of app wc-1\.0"):
        access.check_archive_target(STORE, path, "admin", True, APPS)


def test_archive_into_ones_home():
    assert (
        access.check_archive_target(STORE, "alice/archive/jobs/job-1", "alice", False, APPS)
        == "/srv/store/alice/archive/jobs/job-1"
    )


def test_connections():
    assert access.may_use_connection({"airjobs_owner": "alice"}, "alice", False)
    assert not access.may_use_connection({"airjobs_owner": "alice"}, "bob", False)
    assert access.may_use_connection({"airjobs_users": ["bob", "carol"]}, "carol", False)
    assert access.may_use_connection({"airjobs_users": "bob, carol"}, "bob", False)
    assert not access.may_use_connection({}, "bob", False)
    assert access.may_use_connection({}, "admin", True)
    assert not access.may_use_connection(None, "admin", True)  # no such Connection


@pytest.mark.parametrize(
    "value, read, write",
    [
        ("NONE", False, False),
        ("", False, False),
        (None, False, False),
        ("read", True, False),
        ("WRITE", False, True),
        ("EXECUTE", False, False),
        ("READ_WRITE", True, True),
        ("READ_EXECUTE", True, False),
        ("WRITE_EXECUTE", False, True),
        ("ALL", True, True),
    ],
)
def test_grant_values(value, read, write):
    perm = access.PERMISSIONS[access.parse_permission(value)]
    assert (perm.read, perm.write) == (read, write)


def test_a_bad_grant_value_lists_the_valid_ones():
    with pytest.raises(BadRequest, match="Valid values are: ALL, READ, WRITE"):
        access.parse_permission("OWNER")


def test_the_job_rule():
    job = SimpleNamespace(owner="alice", visible=True)
    assert access.job_permission(job, "alice", False, None) == access.ALL
    assert access.job_permission(job, "root", True, None) == access.ALL
    for granted, action, outcome in [
        (None, "read", NotFound),
        (None, "write", NotFound),
        ("READ", "read", None),
        ("READ", "write", Forbidden),
        ("WRITE", "read", NotFound),
        ("WRITE", "write", None),
        ("EXECUTE", "read", NotFound),
    ]:
        perm = access.job_permission(job, "bob", False, granted)
        if outcome is None:
            access.check_job(job, "j", perm, action)
        else:
            with pytest.raises(outcome):
                access.check_job(job, "j", perm, action)
    with pytest.raises(NotFound, match="not visible"):
        access.check_job(SimpleNamespace(owner="alice", visible=False), "j", access.ALL, "read")


def test_work_directories_inside_homes_stay_each_users():
    """A common Agave layout: jobs run in the users' homes (workDir = homeDir = /home)."""
    shared = {
        "id": "hpc",
        "type": "EXECUTION",
        "owner": "admin",
        "public": True,
        "workDir": "/home",
        "storage": {"protocol": "SFTP", "rootDir": "/", "homeDir": "/home"},
    }
    access.check_path(shared, "alice/job-1-x/out.txt", "alice", False, write=False)
    access.check_path(shared, "alice/archive", "alice", False, write=True)
    with pytest.raises(Forbidden):
        access.check_path(shared, "bob/job-2-y/out.txt", "alice", False, write=False)


def test_a_home_with_an_app_of_ones_own_keeps_it_and_anothers_app_folder_stays_closed():
    mine = [
        {"id": "a-1", "owner": "alice", "deploymentSystem": "store", "deploymentPath": "/alice/apps/a"},
        {"id": "w-1", "owner": "admin", "deploymentSystem": "store", "deploymentPath": "/alice/shared-app"},
    ]
    access.check_path(STORE, "alice/apps/a/run.sh", "alice", False, write=False, apps=mine)
    access.check_path(STORE, "alice/data.txt", "alice", False, write=True, apps=mine)
    with pytest.raises(Forbidden):
        access.check_path(STORE, "alice/shared-app/run.sh", "alice", False, write=False, apps=mine)
    with pytest.raises(Forbidden):
        access.check_path(STORE, "alice", "alice", False, write=True, apps=mine)  # over another's app folder
    calls = []
    access.check_path(STORE, "x/y", "admin", True, write=True, apps=lambda: calls.append(1) or [])
    assert calls == []  # the owner's paths need no app list
