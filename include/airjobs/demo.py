"""Registers the demo storage system, the demo FORK system and the word-count app (idempotent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from airjobs import config, registry

EXAMPLES = config.CHECKOUT / "include" / "examples"
DEMO_OWNER = "admin"


def _load(name: str) -> dict:
    text = (EXAMPLES / name).read_text().replace("${AIRJOBS_VAR}", str(config.var_dir()))
    return json.loads(text)


def register(owner: str = DEMO_OWNER) -> None:
    storage = _load("demo-storage.json")
    fork = _load("demo-fork.json")
    root = Path(storage["storage"]["rootDir"])
    shutil.copytree(EXAMPLES / "apps", root / "apps", dirs_exist_ok=True)
    shutil.copytree(EXAMPLES / "data", root / "samples", dirs_exist_ok=True)
    Path(fork["storage"]["rootDir"]).mkdir(parents=True, exist_ok=True)
    registry.put_system(storage, owner)
    registry.put_system(fork, owner)
    registry.put_app(_load("wc-app.json"), owner)


if __name__ == "__main__":
    register()
