"""What the benchmarks share: the test hosts' settings, a file's sha256, percentiles."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def read_infra() -> dict[str, str]:
    """The settings .ci/infra-up.sh wrote (AIRJOBS_INFRA_ENV, else var/infra/infra.env); exits without them."""
    path = Path(os.environ.get("AIRJOBS_INFRA_ENV") or CHECKOUT / "var/infra/infra.env")
    if not path.exists():
        sys.exit(f"no test hosts: {path} is missing (run .ci/infra-up.sh as root, or set AIRJOBS_INFRA_ENV)")
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.strip().startswith("#"):
            env[key.strip()] = value.strip().strip("'\"")
    return env


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values``, interpolated between neighbours; NaN for none."""
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)
