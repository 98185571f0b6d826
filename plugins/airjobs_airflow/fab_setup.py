"""Registers airjobs' resources and permissions with FAB's security manager and ensures a user exists.

    python -m airjobs_airflow.fab_setup [--user NAME --password PW --role Admin --email E]

Resources: "Agave Jobs", "Agave Apps", "Agave Systems"; Admin, Op and User get read/create/edit/delete on
each, Viewer gets read. (``airflow roles add-perms`` refuses resources FAB does not know yet.)
"""

from __future__ import annotations

import argparse

from airjobs.api.app import APPS, JOBS, SYSTEMS

ALL_ACTIONS = ("can_read", "can_create", "can_edit", "can_delete")
GRANTS = {"Admin": ALL_ACTIONS, "Op": ALL_ACTIONS, "User": ALL_ACTIONS, "Viewer": ("can_read",)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD:ROLE (repeatable)")
    args = parser.parse_args()

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
        for spec in args.user:
            name, password, role_name = spec.split(":", 2)
            user = sm.find_user(username=name)
            role = sm.find_role(role_name)
            if user is None:
                sm.add_user(name, name, "airjobs", f"{name}@localhost", role, password)
                print(f"created user {name} ({role_name})")
            else:
                sm.reset_password(user.id, password)


if __name__ == "__main__":
    main()
