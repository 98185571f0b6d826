"""Registers airjobs' resources and permissions with FAB's security manager and ensures a user exists.

    python -m airjobs_airflow.fab_setup [--service] [--user NAME:PASSWORD:ROLE ...]

``make user NAME=... PASSWORD=... [ROLE=...]`` runs it with ``--service`` (see ``on_service``): a new user gets
the role (default ``Agave User``), an existing one a new password, and the role too when none of its roles
gives facade rights (a job user an earlier release gave Airflow's ``User`` role).

Resources: "Agave Jobs", "Agave Apps", "Agave Systems". The job-user role ``Agave User`` gets read/create/edit/
delete on each and nothing of Airflow's own (no DAG, run, task or log rights), so a job user reaches jobs only
through the facade. Admin keeps everything. Airflow's built-in User, Op and Viewer roles carry global DAG rights
(every user's lifecycle runs and logs) and are not job-user roles: they get no facade rights (and lose any an
earlier release gave them). (``airflow roles add-perms`` refuses resources FAB does not know yet.)
"""

from __future__ import annotations

import argparse

from airjobs.api.app import APPS, JOBS, SYSTEMS

ALL_ACTIONS = ("can_read", "can_create", "can_edit", "can_delete")
JOB_USER_ROLE = "Agave User"
GRANTS = {"Admin": ALL_ACTIONS, JOB_USER_ROLE: ALL_ACTIONS}
#: Airflow's built-in roles with global DAG rights: never job-user roles
NOT_JOB_USER_ROLES = ("User", "Op", "Viewer")


def on_service(users: list[str]) -> int:
    """Run this module with the environment ``make run`` gives Airflow (``airjobs.service.environment``) against
    this checkout's embedded PostgreSQL, started for it if it is not running (and stopped again). On a checkout
    whose service never ran, the whole setup of ``make run`` runs first (``airjobs.service.setup``)."""
    import os
    import subprocess
    import sys

    from airjobs import config, pgserver, service

    fresh = not (config.pg_dir() / "PG_VERSION").exists()
    was_up = pgserver._pid(config.pg_dir()) is not None
    try:
        if fresh:
            service.setup(users)
            print(f"set up the service in {config.var_dir()} with user(s) {', '.join(u.split(':')[0] for u in users)}")
            return 0
        pgserver.start()
        env = {
            **service.environment(),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(config.CHECKOUT / "plugins"), os.environ.get("PYTHONPATH")) if p
            ),
        }
        args = [a for u in users for a in ("--user", u)]
        return subprocess.call([sys.executable, "-m", "airjobs_airflow.fab_setup", *args], env=env)
    finally:
        if not was_up:
            pgserver.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD:ROLE (repeatable)")
    parser.add_argument(
        "--service",
        action="store_true",
        help="with the environment of `make run`, starting its embedded PostgreSQL if needed",
    )
    args = parser.parse_args()
    if args.service:
        raise SystemExit(on_service(args.user))

    from airflow.providers.fab.www.app import create_app

    app = create_app(enable_plugins=False)
    with app.app_context():
        sm = app.appbuilder.sm
        for resource in (JOBS, APPS, SYSTEMS):
            sm.create_resource(resource)
            for role_name, actions in GRANTS.items():
                role = sm.find_role(role_name) or sm.add_role(role_name)
                for action in actions:
                    sm.add_permission_to_role(role, sm.create_permission(action, resource))
            for role_name in NOT_JOB_USER_ROLES:
                role = sm.find_role(role_name)
                for action in ALL_ACTIONS:
                    perm = sm.get_permission(action, resource)
                    if role is not None and perm is not None and perm in role.permissions:
                        sm.remove_permission_from_role(role, perm)
        for spec in args.user:
            name, _, rest = spec.partition(":")
            password, _, role_name = rest.rpartition(":")  # a password may contain ':', a role name does not
            if not name or not password or not role_name:
                raise SystemExit(f"--user wants NAME:PASSWORD:ROLE, got {spec.split(':', 1)[0]}:...")
            user = sm.find_user(username=name)
            role = sm.find_role(role_name)
            if user is None:
                if role is None:
                    raise SystemExit(f"no role {role_name!r} (roles: {', '.join(r.name for r in sm.get_all_roles())})")
                if not sm.add_user(name, name, "airjobs", f"{name}@localhost", role, password):
                    raise SystemExit(f"could not create user {name}")
                print(f"created user {name} ({role_name})")
            else:
                sm.reset_password(user.id, password)
                if role is not None and not any(r.name in GRANTS for r in user.roles):
                    user.roles.append(role)  # a user without facade rights (e.g. Airflow's User role) gets ROLE
                    sm.update_user(user)
                print(f"updated the password of user {name} (roles: {', '.join(r.name for r in user.roles)})")
        upgrade(sm)


def upgrade(sm) -> None:
    """What systems registered before the access rule lack, filled in once (idempotent): the owner of each
    Connection the service made from inline credentials (``extra.airjobs_owner``, so its owner may keep using
    it and nobody else may), and the egress guard of systems whose owner is not an admin."""
    import json

    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airjobs import registry

    for system in registry.list_systems(None):
        owner = system.get("owner") or ""
        with create_session() as session:
            for section in ("login", "storage"):
                conn_id = (system.get(section) or {}).get("connectionId")
                if conn_id != f"airjobs-{system['id']}-{section}":
                    continue
                conn = session.scalar(select(Connection).where(Connection.conn_id == conn_id))
                extra = conn.extra_dejson if conn is not None else None
                if extra is not None and "airjobs_owner" not in extra:
                    conn.extra = json.dumps({**extra, "airjobs_owner": owner})
        if "egressGuard" not in system:
            found = sm.find_user(username=owner)
            admin = found is not None and any(r.name == "Admin" for r in found.roles)
            registry.put_system({**system, "egressGuard": not admin}, owner)


if __name__ == "__main__":
    main()
