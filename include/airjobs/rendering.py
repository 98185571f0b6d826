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

from airjobs.jobpaths import EXIT_CODE_FILE, LOG_FILE  # the names of a job's files: ``airjobs.jobpaths``
from airjobs.timeutil import hms_to_seconds

_MACRO = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class RenderContext:
    job: dict[str, Any]  # id, name, slug, owner, appId, executionSystem, batchQueue, nodeCount, ...
    app: dict[str, Any]
    system: dict[str, Any]
    work_dir: str
    header: str
    extra_env: dict[str, str] = field(default_factory=dict)


def job_macros(ctx: RenderContext) -> dict[str, str]:
    j = ctx.job
    secs = hms_to_seconds(j["maxRunTime"]) if j.get("maxRunTime") else 0
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


def _prefixed(item: dict[str, Any], values: list[str]) -> list[str]:
    """``showArgument`` puts ``argument`` (no space added) before the first value, or every value with
    ``repeatArgument`` (spec §10.2)."""
    details = item.get("details") or {}
    arg = str(details.get("argument") or "")
    if not details.get("showArgument") or not arg.strip():
        return list(values)

    def with_arg(v: str) -> list[str]:
        # "-i " (trailing space) is its own word; "--name=" or "-n" is glued to the value
        return [arg.strip(), v] if arg[-1].isspace() else [arg + v]

    if details.get("repeatArgument"):
        return [w for v in values for w in with_arg(v)]
    return [*with_arg(values[0]), *values[1:]] if values else []


def parameter_words(item: dict[str, Any], value: Any) -> list[str]:
    """The words a parameter contributes to the command line (spec §10.2 rules)."""
    ptype = str((item.get("value") or {}).get("type") or "string").lower()
    details = item.get("details") or {}
    if ptype == "flag":
        arg = str(details.get("argument") or "")
        return [arg.strip()] if value is True and arg.strip() else []
    if ptype == "bool":
        return _prefixed(item, ["1" if value is True else "0"])
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return _prefixed(item, [str(v) for v in values])


def input_words(item: dict[str, Any], values: list[str] | None) -> list[str]:
    """Inputs become the base names of their staged files."""
    return _prefixed(item, [posixpath.basename(v.rstrip("/")) for v in values or []])


# ------------------------------------------------------------------ context-aware substitution
#
# A value never becomes shell code: every macro's words are stored once in a bash array at the top of the
# wrapper (each word shlex-quoted), and the macro itself is replaced by an expansion of that array that
# fits where it stands in the template:
#   unquoted             -> "${AGAVE_V_x[@]}"   one argument per word, no splitting, no globbing
#   inside "..." / here  -> ${AGAVE_V_x[*]}     the words joined by spaces
#   inside '...'         -> '"${AGAVE_V_x[*]}"' close the quote, expand, reopen
#   in a comment         -> ${AGAVE_V_x[*]}     inert
# Expansion results are never parsed again, so $( ), backticks, ;, |, newlines and quotes in a value are
# just characters.

UNQUOTED, DOUBLE, SINGLE, COMMENT, HEREDOC, HEREDOC_LITERAL = range(6)


def _var(key: str) -> str:
    return "AGAVE_V_" + re.sub(r"[^A-Za-z0-9_]", "_", key)


def _expansion(var: str, state: int) -> str:
    if state == UNQUOTED:
        return f'"${{{var}[@]}}"'
    if state == SINGLE:
        return f"'\"${{{var}[*]}}\"'"
    return f"${{{var}[*]}}"


def substitute(template: str, words: dict[str, list[str]]) -> tuple[str, dict[str, list[str]]]:
    """Replace ``${key}`` (case-insensitive keys of ``words``) according to its shell context; returns the
    new text and the arrays it references."""
    out: list[str] = []
    used: dict[str, list[str]] = {}
    state, i, n = UNQUOTED, 0, len(template)
    heredocs: list[tuple[str, bool]] = []  # pending (delimiter, literal) after the current line
    delimiter, line_start = "", True
    while i < n:
        c = template[i]
        if state in (HEREDOC, HEREDOC_LITERAL) and line_start:
            end = template.find("\n", i)
            line = template[i:] if end == -1 else template[i:end]
            if line.lstrip("\t") == delimiter:
                out.append(line)
                i += len(line)
                state = UNQUOTED
                if heredocs:
                    delimiter, literal = heredocs.pop(0)
                    state = HEREDOC_LITERAL if literal else HEREDOC
                line_start = False
                continue
        m = _MACRO.match(template, i) if c == "$" else None
        if m and m.group(1).lower() in words and state != HEREDOC_LITERAL:
            key = m.group(1).lower()
            var = _var(key)
            used[var] = words[key]
            out.append(_expansion(var, state))
            i = m.end()
            line_start = False
            continue
        if state == UNQUOTED:
            if c == "\\" and i + 1 < n:
                out.append(template[i : i + 2])
                i += 2
                line_start = False
                continue
            if c == "'":
                state = SINGLE
            elif c == '"':
                state = DOUBLE
            elif c == "#" and (i == 0 or template[i - 1] in " \t\n;&|("):
                state = COMMENT
            elif c == "<" and template.startswith("<<", i) and not template.startswith("<<<", i):
                hm = re.match(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1", template[i:])
                if hm:
                    heredocs.append((hm.group(2), bool(hm.group(1))))
                    out.append(hm.group(0))
                    i += len(hm.group(0))
                    continue
        elif state == SINGLE and c == "'":
            state = UNQUOTED
        elif state == DOUBLE:
            if c == "\\" and i + 1 < n:
                out.append(template[i : i + 2])
                i += 2
                continue
            if c == '"':
                state = UNQUOTED
        out.append(c)
        i += 1
        line_start = c == "\n"
        if c == "\n":
            if state == COMMENT:
                state = UNQUOTED
            if state == UNQUOTED and heredocs:
                delimiter, literal = heredocs.pop(0)
                state = HEREDOC_LITERAL if literal else HEREDOC
    return "".join(out), used


def template_words(ctx: RenderContext) -> dict[str, list[str]]:
    """Every macro a template may use -> its words (parameters, inputs, then job macros)."""
    words: dict[str, list[str]] = {}
    for key, value in job_macros(ctx).items():
        words[key.lower()] = [value]
    for item in ctx.app.get("inputs") or []:
        words[item["id"].lower()] = input_words(item, ctx.job["inputs"].get(item["id"]))
    for item in ctx.app.get("parameters") or []:
        ptype = str((item.get("value") or {}).get("type") or "string").lower()
        v = ctx.job["parameters"].get(item["id"])
        if v is None and ptype == "bool":
            v = False
        words[item["id"].lower()] = parameter_words(item, v)
    return words


def declarations(used: dict[str, list[str]]) -> list[str]:
    return [f"{var}=({' '.join(quote(w) for w in used[var])})" for var in sorted(used)]


def render_template(template: str, ctx: RenderContext) -> str:
    """The app template with its macros substituted, preceded by the arrays they expand."""
    text, used = substitute(template, template_words(ctx))
    return "\n".join([*declarations(used), text]) if used else text


def render_wrapper(template: str, ctx: RenderContext) -> str:
    macros = job_macros(ctx)
    lines = [ctx.header.rstrip("\n")]
    lines.append("")
    lines.append("# Agave environment settings")
    lines.append(f"cd {quote(ctx.work_dir)} || exit 1")
    lines.append(
        'trap \'agave_rc=$?; printf "%s\\n" "$agave_rc" > '
        f"{EXIT_CODE_FILE}.tmp && mv -f {EXIT_CODE_FILE}.tmp {EXIT_CODE_FILE}' EXIT"
    )
    lines.append(f"export AGAVE_LOG_FILE={quote(ctx.work_dir + '/' + LOG_FILE)}")
    for key in ("AGAVE_JOB_ID", "AGAVE_JOB_NAME", "AGAVE_JOB_OWNER", "AGAVE_JOB_WORK_PATH"):
        lines.append(f"export {key}={quote(macros[key])}")
    for key, value in sorted(ctx.extra_env.items()):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            lines.append(f"export {key}={quote(value)}")
    startup = ctx.system.get("startupScript")
    if startup:
        home = str(startup).startswith("~/")
        rest = str(startup)[2:] if home else str(startup)
        script, used = substitute(rest, {k.lower(): [v] for k, v in job_macros(ctx).items()})
        lines.append("")
        lines.append("# execution system startup script (its output goes to the log)")
        lines.extend(declarations(used))
        lines.append(f"__agave_startup={'$HOME/' if home else ''}{script if used else quote(script)}")
        lines.append('if [ -f "$__agave_startup" ]; then . "$__agave_startup" >> "$AGAVE_LOG_FILE" 2>&1; fi')
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
