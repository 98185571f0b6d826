"""Registers the demo storage system, the demo FORK system and the word-count app (idempotent); as root, makes
sure the account the FORK system's jobs run as exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from airjobs import accounts, config, registry

EXAMPLES = config.CHECKOUT / "include" / "examples"
DEMO_OWNER = "admin"


def _load(name: str) -> dict[str, Any]:
    text = (EXAMPLES / name).read_text().replace("${AIRJOBS_VAR}", str(config.var_dir()))
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def register(owner: str = DEMO_OWNER) -> None:
    storage = _load("demo-storage.json")
    fork = _load("demo-fork.json")
    root = Path(storage["storage"]["rootDir"])
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)  # every user's files and archives: only the service (staging, archiving) reads them
    shutil.copytree(EXAMPLES / "apps", root / "apps", dirs_exist_ok=True)
    shutil.copytree(EXAMPLES / "data", root / "samples", dirs_exist_ok=True)
    # the FORK system's jobs run as the run-as account when the service is root (airjobs.config.run_as)
    accounts.ensure_run_as_account()
    Path(fork["storage"]["rootDir"]).mkdir(parents=True, exist_ok=True)
    registry.put_system(storage, owner)
    registry.put_system(fork, owner)
    registry.put_app(_load("wc-app.json"), owner)


if __name__ == "__main__":
    register()
