"""The unprivileged account LOCAL jobs run as when the service runs as root (``airjobs.config.run_as``).

Its own module so that both the supervisor (``airjobs.service``) and the demo registration (``airjobs.demo``)
can make sure it exists without importing each other.
"""

from __future__ import annotations

import pwd
import shutil
import subprocess

from airjobs import config


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
    p = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        pwd.getpwnam(name)  # made by us, or by another service starting at the same time
    except KeyError:
        raise RuntimeError(f"could not create the account {name} that jobs run as: {p.stderr.strip()}") from None
    print(f"[airjobs] created the account {name} that jobs on LOCAL systems run as", flush=True)
    return name
