"""One small pure module per scheduler: commands to build and output to parse, no I/O.

``get(name)`` maps a system's ``scheduler`` (spec §11.2, including the ``CUSTOM_*`` and Torque/Moab names) to
its module. Every batch module offers ``header(JobRequest)``, ``submit_command(work_dir, script)``,
``parse_submit(output)``, ``status_command(ids)``, ``parse_status(output) -> {id: (JobStatus, exit code)}`` and
``kill_command(id)``; FORK (``fork``) differs: its header and submit take the script's slug, and its status is
the ``ps`` STAT of a process group leader.
"""

from __future__ import annotations

from types import ModuleType

from airjobs.schedulers import condor, fork, lsf, pbs, sge, slurm

_MODULES: dict[str, ModuleType] = {
    "FORK": fork,
    "SLURM": slurm, "CUSTOM_SLURM": slurm,
    "PBS": pbs, "CUSTOM_PBS": pbs, "TORQUE": pbs, "CUSTOM_TORQUE": pbs, "MOAB": pbs, "CUSTOM_MOAB": pbs,
    "SGE": sge, "CUSTOM_GRIDENGINE": sge,
    "LSF": lsf, "CUSTOM_LSF": lsf,
    "CONDOR": condor, "CUSTOM_CONDOR": condor,
}

NAMES = frozenset(_MODULES)


def name_of(system: dict) -> str:
    return str(system.get("scheduler") or "FORK").upper()


def get(name: str) -> ModuleType:
    module = _MODULES.get(name.upper())
    if module is None:
        raise ValueError(f"Unsupported scheduler {name}: use one of {', '.join(sorted(NAMES))}.")
    return module


def is_fork(module: ModuleType) -> bool:
    return module is fork
