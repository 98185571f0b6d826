"""One small pure module per scheduler: commands to build and output to parse, no I/O.

``get(name)`` maps a system's ``scheduler`` (spec §11.2, including the ``CUSTOM_*`` and Torque/Moab names) to
its module. Every module, FORK's (``fork``) included, satisfies the protocol ``base.Scheduler``: ``NAME``,
``DETACHED``, ``header(JobRequest)``, ``submit_command(work_dir, script)``, ``parse_submit(output)``,
``status_command(ids)``, ``parse_status(output) -> {id: (JobStatus, exit code)}``, ``states(output, ids) ->
{id: (JobStatus, exit code, word)}`` and ``kill_command(id)``. HTCondor adds ``submit_file_name(script)`` and
``submit_file(JobRequest, script)`` (its settings go in a file beside the wrapper), SLURM
``controller_unreachable(output)`` (a submit that failed because slurmctld was away submitted nothing).
"""

from __future__ import annotations

from typing import Any

from airjobs.schedulers import condor, fork, lsf, pbs, sge, slurm
from airjobs.schedulers.base import Scheduler

_MODULES: dict[str, Scheduler] = {
    "FORK": fork,
    "SLURM": slurm,
    "CUSTOM_SLURM": slurm,
    "PBS": pbs,
    "CUSTOM_PBS": pbs,
    "TORQUE": pbs,
    "CUSTOM_TORQUE": pbs,
    "MOAB": pbs,
    "CUSTOM_MOAB": pbs,
    "SGE": sge,
    "CUSTOM_GRIDENGINE": sge,
    "LSF": lsf,
    "CUSTOM_LSF": lsf,
    "CONDOR": condor,
    "CUSTOM_CONDOR": condor,
}

NAMES = frozenset(_MODULES)


def name_of(system: dict[str, Any]) -> str:
    return str(system.get("scheduler") or "FORK").upper()


def get(name: str) -> Scheduler:
    module = _MODULES.get(name.upper())
    if module is None:
        raise ValueError(f"Unsupported scheduler {name}: use one of {', '.join(sorted(NAMES))}.")
    return module
