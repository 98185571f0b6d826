"""Wrapper script rendering (spec §10.2, §10.3): a pure function of the template and the job.

Every value a user supplied reaches the script through ``shlex.quote``; only text the app's author wrote
(the template itself and an input's or parameter's ``argument``) is emitted verbatim.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from shlex import quote
from typing import Any

EXIT_CODE_FILE = ".agave.exitcode"
ARCHIVE_MANIFEST = ".agave.archive"
LOG_FILE = ".agave.log"

_MACRO = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class RenderContext:
    job: dict[str, Any]  # id, name, slug, owner, appId, executionSystem, batchQueue, nodeCount, ...
    app: dict[str, Any]
    system: dict[str, Any]
    work_dir: str
    header: str
    extra_env: dict[str, str] = field(default_factory=dict)


def _hms_seconds(hms: str | None) -> int:
    if not hms:
        return 0
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + s


def job_macros(ctx: RenderContext) -> dict[str, str]:
    j = ctx.job
    secs = _hms_seconds(j.get("maxRunTime"))
    macros = {
        "AGAVE_JOB_NAME": j["slug"],
        "AGAVE_JOB_NAME_RAW": j["name"],
        "AGAVE_JOB_ID": j["id"],
        "AGAVE_JOB_APP_ID": j["appId"],
        "AGAVE_JOB_EXECUTION_SYSTEM": j["executionSystem"],
        "AGAVE_JOB_BATCH_QUEUE": j.get("batchQueue") or "",
        "AGAVE_JOB_SUBMIT_TIME": j.get("submitTime") or "",
        "AGAVE_JOB_ARCHIVE_SYSTEM": j.get("archiveSystem") or "",
        "AGAVE_JOB_ARCHIVE_PATH": j.get("archivePath") or "",
        "AGAVE_JOB_ARCHIVE": "1" if j.get("archive") else "",
        "AGAVE_JOB_NODE_COUNT": str(j.get("nodeCount", 1)),
        "AGAVE_JOB_PROCESSORS_PER_NODE": str(j.get("processorsPerNode", 1)),
        "AGAVE_JOB_MEMORY_PER_NODE": str(j.get("memoryPerNode", 0)),
        "IPLANT_CORES_REQUESTED": str(int(j.get("nodeCount", 1)) * int(j.get("processorsPerNode", 1))),
        "AGAVE_JOB_MAX_RUNTIME": j.get("maxRunTime") or "",
        "AGAVE_JOB_MAX_RUNTIME_SECONDS": str(secs),
        "AGAVE_JOB_MAX_RUNTIME_MILLISECONDS": str(secs * 1000),
        "AGAVE_JOB_WORK_PATH": ctx.work_dir,
        "AGAVE_JOB_OWNER": j["owner"],
        "AGAVE_JOB_TENANT": j.get("tenant") or "airjobs",
    }
    macros["IPLANT_JOB_NAME"] = macros["AGAVE_JOB_NAME"]
    return macros


def _prefixed(item: dict, values: list[str]) -> list[str]:
    details = item.get("details") or {}
    arg = str(details.get("argument") or "")
    quoted = [quote(v) for v in values]
    if not details.get("showArgument") or not arg:
        return quoted
    if details.get("repeatArgument"):
        return [arg + q for q in quoted]
    return [arg + quoted[0], *quoted[1:]] if quoted else []


def render_parameter(item: dict, value: Any) -> str:
    ptype = str((item.get("value") or {}).get("type") or "string").lower()
    details = item.get("details") or {}
    if ptype == "flag":
        return str(details.get("argument") or "") if value is True else ""
    if ptype == "bool":
        bit = "1" if value is True else "0"
        return _prefixed(item, [bit])[0]
    if value is None:
        return ""
    values = value if isinstance(value, list) else [value]
    return " ".join(_prefixed(item, [str(v) for v in values]))


def render_input(item: dict, values: list[str] | None) -> str:
    if not values:
        return ""
    names = [posixpath.basename(v.rstrip("/")) for v in values]
    return " ".join(_prefixed(item, names))


def render_template(template: str, ctx: RenderContext) -> str:
    """Replace app ids (case-insensitively) and job macros; leave other ``${NAME}`` to the shell."""
    values: dict[str, str] = {}
    for item in ctx.app.get("parameters") or []:
        ptype = str((item.get("value") or {}).get("type") or "string").lower()
        v = ctx.job["parameters"].get(item["id"])
        if v is None and ptype == "bool":
            v = False
        values[item["id"].lower()] = render_parameter(item, v)
    for item in ctx.app.get("inputs") or []:
        values[item["id"].lower()] = render_input(item, ctx.job["inputs"].get(item["id"]))
    macros = {k.lower(): quote(v) for k, v in job_macros(ctx).items()}

    def sub(m: re.Match) -> str:
        key = m.group(1).lower()
        if key in values:
            return values[key]
        if key in macros:
            return macros[key]
        return m.group(0)

    return _MACRO.sub(sub, template)


def render_wrapper(template: str, ctx: RenderContext) -> str:
    macros = job_macros(ctx)
    lines = [ctx.header.rstrip("\n")]
    lines.append("")
    lines.append("# Agave environment settings")
    lines.append(f"cd {quote(ctx.work_dir)} || exit 1")
    lines.append(
        "trap 'agave_rc=$?; printf \"%s\\n\" \"$agave_rc\" > "
        f"{EXIT_CODE_FILE}.tmp && mv -f {EXIT_CODE_FILE}.tmp {EXIT_CODE_FILE}' EXIT"
    )
    lines.append(f"export AGAVE_LOG_FILE={quote(ctx.work_dir + '/' + LOG_FILE)}")
    for key in ("AGAVE_JOB_ID", "AGAVE_JOB_NAME", "AGAVE_JOB_OWNER", "AGAVE_JOB_WORK_PATH"):
        lines.append(f"export {key}={quote(macros[key])}")
    for key, value in sorted(ctx.extra_env.items()):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            lines.append(f"export {key}={quote(value)}")
    modules = ctx.app.get("modules") or []
    if modules:
        lines.append("")
        lines.append("# app modules")
        lines.extend(f"module {m}" for m in modules)
    environment = ctx.system.get("environment")
    if environment:
        lines.append("")
        lines.append("# execution system environment")
        lines.append(str(environment))
    lines.append("")
    lines.append("# app wrapper template")
    lines.append(render_template(template, ctx).rstrip("\n"))
    lines.append("")
    return "\n".join(lines)
