"""Turning a job request (spec §4) into a validated job row.

Nothing here writes: ``build_job`` either returns an unsaved ``Job`` or raises ``BadRequest``/``Forbidden``
naming the field and the reason, so a refused request never leaves a row behind.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from airjobs import access, egress, registry
from airjobs.errors import AgaveError, BadRequest, Forbidden
from airjobs.models import Job
from airjobs.notifications import subscriptions
from airjobs.statuses import JobStatus
from airjobs.timeutil import hms_to_seconds, new_job_id, now

#: canonical field -> accepted legacy aliases (spec §4.1 Table 1)
ALIASES = {
    "name": ("name", "jobName"),
    "appId": ("appId", "softwareName"),
    "executionSystem": ("executionSystem", "executionHost"),
    "batchQueue": ("batchQueue", "queue"),
    "nodeCount": ("nodeCount",),
    "processorsPerNode": ("processorsPerNode", "processorCount"),
    "memoryPerNode": ("memoryPerNode", "maxMemory"),
    "maxRunTime": ("maxRunTime", "requestedTime"),
    "archive": ("archive",),
    "archiveSystem": ("archiveSystem",),
    "archivePath": ("archivePath",),
    "archiveOnAppError": ("archiveOnAppError",),
    "notifications": ("notifications",),
    "callbackUrl": ("callbackUrl", "callbackURL"),
    "inputs": ("inputs",),
    "parameters": ("parameters",),
    "dependencies": ("dependencies",),
}
KNOWN_FIELDS = {alias for names in ALIASES.values() for alias in names}

RUNTIME_RE = re.compile(r"^([0-9]{1,4}):([0-5]\d):([0-5]\d)$")
MEMORY_RE = re.compile(r"^([\d.]+)\s*([EPTGM]B)?$", re.IGNORECASE)
_MEMORY_SCALE = {"MB": 1 / 1024, "GB": 1, "TB": 1024, "PB": 1024**2, "EB": 1024**3}
TRUE_WORDS = {"true", "1", "on", "yes"}
FALSE_WORDS = {"false", "0", "off", "no"}


def parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """Parse a JSON request body; anything that is not a JSON object (or nested too deeply) is a 400."""
    from airjobs.jsonlimits import check_json_depth

    check_json_depth(raw, "job request")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BadRequest(f"Unable to parse job request: malformed JSON ({e}).") from None
    if not isinstance(body, dict):
        raise BadRequest("Unable to parse job request: the body must be a JSON object.")
    return body


FORM_EXTRA = "_formFields"


def from_form(fields: dict[str, str]) -> dict[str, Any]:
    """HTML form fields: job fields by name; any other field names an app input or parameter."""
    body: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in fields.items():
        if key in KNOWN_FIELDS:
            body[key] = value
        else:
            extra[key] = value
    if extra:
        body[FORM_EXTRA] = extra
    return body


def pick(body: dict[str, Any], field: str) -> Any:
    """The value of a job field under any of its aliases (None when absent or null)."""
    return _pick(body, field)


def _pick(body: dict[str, Any], field: str) -> Any:
    for alias in ALIASES[field]:
        if alias in body and body[alias] is not None:
            return body[alias]
    return None


MAX_VALUE_CHARS = 65536
MAX_INT = 2**31 - 1  # the database's integer columns


def check_text(field: str, value: Any) -> None:
    """Values are stored and passed as text: NUL bytes, unpaired surrogates and huge values are refused."""
    if not isinstance(value, str):
        return
    # the name is shown in the answer: as text that can be sent (a field name may be the offending string)
    field = field.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if "\x00" in value:
        raise BadRequest(f"Invalid value for {field}: it contains a NUL byte.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"Invalid value for {field}: it is not valid UTF-8 text.") from None
    if len(value) > MAX_VALUE_CHARS:
        raise BadRequest(f"Invalid value for {field}: at most {MAX_VALUE_CHARS} characters.")


def split_values(value: Any) -> list[Any]:
    """D6: a JSON array, a single value, or a ``;``-separated string."""
    if value is None:
        return []
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            if isinstance(v, (dict, list)):
                raise BadRequest("Values must be strings, numbers or booleans, not nested objects.")
            out.append(v)
        return out
    if isinstance(value, dict):
        raise BadRequest("Values must be strings, numbers or booleans, not objects.")
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip() != ""]
    return [value]


def _positive_int(value: Any, field: str) -> int:
    try:
        n = int(str(value).strip()) if not isinstance(value, bool) else 0
    except ValueError:
        n = 0
    if n <= 0 or n > MAX_INT:
        raise BadRequest(
            f"Invalid {field} value {value!r}. {field} must be a positive integer value (at most {MAX_INT})."
        )
    return n


def parse_memory_gb(value: Any, field: str = "memoryPerNode") -> float:
    """``###.#[EPTGM]B`` (a plain number is GB) -> GB."""
    if isinstance(value, bool):
        raise BadRequest(f"Invalid {field} {value!r}. It should be a postive value specified in ###.#[EPTGM]B format.")
    text = str(value).replace(",", "").strip()
    m = MEMORY_RE.match(text)
    try:
        amount = float(m.group(1)) if m else -1
    except ValueError:
        amount = -1
    if not m or amount <= 0:
        raise BadRequest(f"Invalid {field} {value!r}. It should be a postive value specified in ###.#[EPTGM]B format.")
    return amount * _MEMORY_SCALE[(m.group(2) or "GB").upper()]


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise BadRequest(f"Invalid {field} value {value!r}: must be true or false.")


def _number(value: Any, pid: str) -> int | float:
    if isinstance(value, bool):
        raise BadRequest(f"Invalid parameter value for {pid}. {pid} must be a number.")
    if isinstance(value, (int, float)):
        return value
    text = str(value).strip()
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    try:
        d = Decimal(text)
        if not d.is_finite():
            raise InvalidOperation
        return float(d)
    except InvalidOperation:
        raise BadRequest(f"Invalid parameter value for {pid}. {pid} must be a number.") from None


def _cardinality(kind: str, item: dict[str, Any], values: list[Any]) -> None:
    sem = item.get("semantics") or {}
    lo = sem.get("minCardinality")
    hi = sem.get("maxCardinality")
    if lo is not None and lo > 0 and len(values) < lo:
        raise BadRequest(f"{kind} {item['id']} requires at least {lo} values, {len(values)} given.")
    if hi is not None and hi != -1 and len(values) > hi:
        raise BadRequest(f"{kind} {item['id']} may have at most {hi} values, {len(values)} given.")


#: seconds one validator may take on one value: an app's validator is a user's regular expression, and one
#: with nested repetition (``^(a+)+$``) takes exponential time on a short value (a denial of service)
VALIDATOR_SECONDS = 0.25


def _validator(kind: str, item: dict[str, Any], values: list[Any]) -> None:
    """D7: regex *search* semantics, run by the ``regex`` engine with a time limit."""
    import regex

    pattern = (item.get("value") or {}).get("validator")
    if not pattern:
        return
    for v in values:
        try:
            matched = regex.search(pattern, str(v), flags=regex.VERSION0, timeout=VALIDATOR_SECONDS)
        except TimeoutError:
            raise BadRequest(
                f"Invalid {kind.lower()} value for {item['id']}: its validator {pattern!r} took too long on this value."
            ) from None
        except regex.error as e:
            raise BadRequest(f"Invalid validator {pattern!r} of {item['id']}: {e}.") from None
        if not matched:
            raise BadRequest(f"Invalid {kind.lower()} value {v!r} for {item['id']}: it does not match {pattern!r}.")


SUPPORTED_SCHEMES = ("agave", "http", "https", "sftp")


def check_input_uri(input_id: str, value: str) -> None:
    try:
        urlsplit(value)
    except ValueError as e:
        raise BadRequest(f"Invalid input value for {input_id}: {value!r} is not a valid URL ({e}).") from None
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", value)
    if "\x00" in value:
        raise BadRequest(f"Invalid input value for {input_id}: it contains a NUL byte.")
    path = re.sub(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*", "", value)
    if ".." in path.replace("\\", "/").split("/"):
        raise BadRequest(f"Invalid input value for {input_id}: the path {value!r} may not contain '..'.")
    if m and m.group(1).lower() not in SUPPORTED_SCHEMES:
        raise BadRequest(
            f"Invalid input value for {input_id}: URI with the {m.group(1)} scheme are not currently supported. "
            "Please specify your input as a relative path, an Agave resource URL, or a URL with one of the "
            "following schemes: http, https, sftp, or agave."
        )
    if m and m.group(1).lower() in ("http", "https"):
        try:
            egress.check_url(value)
        except BadRequest as e:  # EgressRefused, or a URL that does not parse
            raise type(e)(f"Invalid input value for {input_id}: {e.message}") from None


def resolve_inputs(app: dict[str, Any], given: dict[str, Any]) -> dict[str, list[str]]:
    declared = {i["id"]: i for i in app.get("inputs") or []}
    lower = {k.lower(): k for k in declared}
    unknown = [k for k in given if k.lower() not in lower]
    if unknown:
        raise BadRequest(f"Unknown input {unknown[0]!r}: app {app['id']} has no such input.")
    given = {lower[k.lower()]: v for k, v in given.items()}
    out: dict[str, list[str]] = {}
    for iid, item in declared.items():
        value = item.get("value") or {}
        visible = value.get("visible", True)
        if not visible:
            if iid in given:
                raise BadRequest(f"Input {iid} is a fixed value that cannot be set manually.")
            values = split_values(value.get("default"))
        else:
            values = split_values(given.get(iid))
        values = [str(v) for v in values]
        for v in values:
            check_text(iid, v)
            check_input_uri(iid, v)
        if not values:
            if value.get("required", not visible) and visible:
                raise BadRequest(f"No input specified for {iid}")
            if not values:
                continue
        _cardinality("Input", item, values)
        _validator("Input", item, values)
        out[iid] = values
    return out


def resolve_parameters(app: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    declared = {p["id"]: p for p in app.get("parameters") or []}
    lower = {k.lower(): k for k in declared}
    unknown = [k for k in given if k.lower() not in lower]
    if unknown:
        raise BadRequest(f"Unknown parameter {unknown[0]!r}: app {app['id']} has no such parameter.")
    given = {lower[k.lower()]: v for k, v in given.items()}
    out: dict[str, Any] = {}
    for pid, item in declared.items():
        value = item.get("value") or {}
        ptype = str(value.get("type") or "string").lower()
        visible = value.get("visible", True)
        if not visible:
            if pid in given:
                raise BadRequest(f"Parameter {pid} is a fixed value that cannot be set manually.")
            raw = value.get("default")
            if raw is None and ptype in ("bool", "flag"):
                raw = False
        else:
            raw = given.get(pid)
        values = split_values(raw)
        for v in values:
            check_text(pid, v)
        if not values:
            if visible and value.get("required", True):
                raise BadRequest(f"No input parameter specified for {pid}")
            continue
        if ptype in ("bool", "flag"):
            if len(values) != 1:
                raise BadRequest(f"Invalid parameter value for {pid}. {pid} takes a single true or false value.")
            out[pid] = _bool(values[0], pid)
            continue
        _cardinality("Parameter", item, values)
        if ptype == "number":
            typed: list[Any] = [_number(v, pid) for v in values]
        elif ptype == "enumeration":
            allowed: list[Any] = []
            for e in value.get("enumValues") or value.get("enum_values") or []:
                allowed.extend(e.keys() if isinstance(e, dict) else [e])
            allowed = [str(a) for a in allowed]
            for v in values:
                if str(v) not in allowed:
                    raise BadRequest(f"Invalid parameter value for {pid}. Value must be one of: {', '.join(allowed)}")
            typed = [str(v) for v in values]
        else:
            typed = [v if isinstance(v, str) else json.dumps(v) for v in values]
        if ptype in ("string", "number"):
            _validator("Parameter", item, typed)
        out[pid] = typed[0] if len(typed) == 1 else typed
    return out


def _limit(queue: dict[str, Any], field: str) -> float:
    """A queue limit as a number; -1 (or missing) is unlimited."""
    value = queue.get(field, -1)
    if value in (None, -1, "-1", ""):
        return float("inf")
    if field == "maxMemoryPerNode":
        return parse_memory_gb(value, "maxMemoryPerNode")
    if field == "maxRequestedTime":
        return float(hms_to_seconds(str(value)))
    return float(value)


def fits(queue: dict[str, Any], nodes: int, ppn: int, memory_gb: float, run_time: str | None) -> bool:
    """Spec §4.3: every requested amount within the queue's limit (a missing run time counts as 00:00:01)."""
    seconds = hms_to_seconds(run_time) if run_time else 1
    return (
        nodes <= _limit(queue, "maxNodes")
        and ppn <= _limit(queue, "maxProcessorsPerNode")
        and memory_gb <= _limit(queue, "maxMemoryPerNode")
        and seconds <= _limit(queue, "maxRequestedTime")
    )


def choose_queue(
    system: dict[str, Any],
    app: dict[str, Any],
    requested: str | None,
    nodes: int,
    ppn: int,
    memory_gb: float,
    run_time: str | None,
) -> dict[str, Any] | None:
    """Spec §4.3: the user's queue, else the app's default, else the system default if the request fits,
    else the smallest queue that fits; the chosen queue must then fit the request."""
    queues: list[dict[str, Any]] = system.get("queues") or []
    by_name = {q.get("name"): q for q in queues}
    if not queues:
        return None
    chosen: dict[str, Any] | None = None
    if requested:
        chosen = by_name.get(requested)
        if chosen is None:
            raise BadRequest(
                f"Invalid batchQueue. No batch queue named {requested} is defined on system {system['id']}"
            )
    elif app.get("defaultQueue"):
        chosen = by_name.get(app["defaultQueue"])
        if chosen is None:
            raise BadRequest(
                f"Invalid batchQueue. The app's default queue {app['defaultQueue']} is not defined on "
                f"system {system['id']}"
            )
    else:
        default = next((q for q in queues if q.get("default")), None)
        if default is not None and fits(default, nodes, ppn, memory_gb, run_time):
            chosen = default
        else:

            def key(q: dict[str, Any]) -> tuple[Any, ...]:  # the smallest queue that fits
                return (
                    _limit(q, "maxNodes"),
                    _limit(q, "maxMemoryPerNode"),
                    _limit(q, "maxProcessorsPerNode"),
                    _limit(q, "maxRequestedTime"),
                    q.get("name"),
                )

            chosen = next(
                (q for q in sorted(queues, key=key) if q is not default and fits(q, nodes, ppn, memory_gb, run_time)),
                default,
            )
    if chosen is None or not fits(chosen, nodes, ppn, memory_gb, run_time):
        raise BadRequest(
            f"Invalid batchQueue. No queue found on execution system {system['id']} to support jobs requiring "
            f"{nodes} nodes with {memory_gb:g} GB memory and {ppn} processors per node, and a max run time of "
            f"{run_time or '00:00:01'}."
        )
    found: dict[str, Any] = chosen
    return found


ARCHIVE_MACROS = (
    "APP_ID",
    "EXECUTION_SYSTEM",
    "BATCH_QUEUE",
    "JOB_NAME",
    "JOB_ID",
    "JOB_NODE_COUNT",
    "JOB_PROCESSORS_PER_NODE",
    "JOB_MEMORY_PER_NODE",
    "JOB_CREATED_TIME",
    "JOB_OWNER",
    "ARCHIVE_SYSTEM",
    "TENANT_ID",
)


def resolve_archive_path(template: str, values: dict[str, str]) -> str:
    """Resolve the ``${MACRO}`` names of spec §4.1 in an archivePath; the result must stay in its root."""
    from airjobs.paths import clean_relative

    def sub(m: re.Match[str]) -> str:
        key = m.group(1).upper()
        return values[key] if key in values else m.group(0)

    resolved = re.sub(r"\$\{([A-Za-z_]+)\}", sub, template)
    if "\x00" in resolved or ".." in resolved.replace("\\", "/").split("/"):
        raise BadRequest(f"Invalid archivePath {template!r}: it may not contain '..'.")
    absolute = resolved.startswith("/")
    rel = clean_relative(resolved)
    if not rel:
        raise BadRequest(f"Invalid archivePath {template!r}: it names no folder.")
    return ("/" if absolute else "") + rel


def check_strings(value: Any, where: str = "") -> None:
    """Every string of a request (keys too) is text the database can store: no NUL, valid UTF-8 (a JSON
    ``\\ud800`` escape decodes to an unpaired surrogate), bounded; and every number is finite (Python's JSON
    reader takes ``NaN`` and ``Infinity``, PostgreSQL's json type does not). The 400 names where it is."""
    todo: list[tuple[Any, str]] = [(value, where)]
    while todo:  # a loop, not recursion: the depth is bounded by the body reader, not by the stack
        value, where = todo.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                check_text(f"{where}{k} (a field name)", k)
                todo.append((v, f"{where}{k}."))
        elif isinstance(value, list):
            todo.extend((v, f"{where.rstrip('.')}[{i}].") for i, v in enumerate(value))
        elif isinstance(value, str):
            check_text(where.rstrip(".") or "request", value)
        elif isinstance(value, float) and not math.isfinite(value):
            field = (where.rstrip(".") or "request").encode("utf-8", "backslashreplace").decode("utf-8")
            field = field.replace("\x00", "\\x00")
            raise BadRequest(f"Invalid value for {field}: {value} is not a finite number.")


def build_job(body: dict[str, Any], owner: str, is_admin: bool = False) -> Job:
    """Validate a job request for ``owner`` and return the unsaved PENDING job. What the job may read and
    write (inputs, archive) is checked by ``authorize``."""
    check_strings(body)
    if _pick(body, "dependencies") is not None:
        raise BadRequest("Job dependencies are not yet supported.")

    name = _pick(body, "name")
    if name is None or str(name).strip() == "":
        raise BadRequest("Job name cannot be empty. Please specify a name for this job.")
    name = str(name).strip()
    check_text("name", name)
    if len(name) > 64:
        raise BadRequest("Job name must be less than 64 characters.")

    app_id = _pick(body, "appId")
    if app_id is None or str(app_id).strip() == "":
        raise BadRequest("appId cannot be empty. Please specify the app to run as appId.")
    app_id = str(app_id).strip()
    if len(app_id) > 80:
        raise BadRequest("Invalid appId. App ids are at most 80 characters.")
    app = registry.get_app(app_id)
    if app is None or not access.may_use_app(app, owner, is_admin):  # someone else's private app: as if none
        raise BadRequest(f"No app found matching {app_id}")

    system_id = app["executionSystem"]
    requested_system = _pick(body, "executionSystem")
    if requested_system is not None and str(requested_system) != system_id:
        raise Forbidden(
            "Invalid execution system. Apps are registered to run on a specific execution system. "
            f"App {app_id} runs on {system_id}, not {requested_system}."
        )
    system = registry.get_system(system_id)
    if system is None:
        raise BadRequest(f"Execution system {system_id} of app {app_id} is not registered.")

    inputs_raw = _pick(body, "inputs") or {}
    params_raw = _pick(body, "parameters") or {}
    if not isinstance(inputs_raw, dict):
        raise BadRequest("Invalid inputs: must be an object mapping input ids to values.")
    if not isinstance(params_raw, dict):
        raise BadRequest("Invalid parameters: must be an object mapping parameter ids to values.")
    extra = body.get(FORM_EXTRA) or {}
    if extra:
        input_ids = {i["id"].lower() for i in app.get("inputs") or []}
        param_ids = {p["id"].lower() for p in app.get("parameters") or []}
        inputs_raw, params_raw = dict(inputs_raw), dict(params_raw)
        for key, value in extra.items():
            if key.lower() in input_ids:
                inputs_raw[key] = value
            elif key.lower() in param_ids:
                params_raw[key] = value
            else:
                raise BadRequest(
                    f"Unknown field {key!r}: it is neither a job field nor an input or parameter of {app_id}."
                )
    inputs = resolve_inputs(app, inputs_raw)
    parameters = resolve_parameters(app, params_raw)

    node_count = _pick(body, "nodeCount")
    node_count = (
        _positive_int(node_count, "nodeCount")
        if node_count is not None
        else max(1, int(app.get("defaultNodeCount") or 1))
    )
    ppn = _pick(body, "processorsPerNode")
    ppn = (
        _positive_int(ppn, "processorsPerNode")
        if ppn is not None
        else max(1, int(app.get("defaultProcessorsPerNode") or 1))
    )
    mem = _pick(body, "memoryPerNode")
    if mem is None:
        mem = app.get("defaultMemoryPerNode")
    memory = parse_memory_gb(mem) if mem not in (None, "", -1, "-1") else None
    run_time = _pick(body, "maxRunTime") or app.get("defaultMaxRunTime")
    if run_time is not None:
        run_time = str(run_time).strip()
        if not RUNTIME_RE.match(run_time):
            raise BadRequest(f"Invalid maxRunTime {run_time!r}. maxRunTime should be in hh:mm:ss format.")
    requested_queue = _pick(body, "batchQueue")
    if isinstance(requested_queue, (dict, list)):
        raise BadRequest("Invalid batchQueue: must be the name of a queue of the execution system.")
    if requested_queue is not None and not isinstance(requested_queue, str):
        requested_queue = str(requested_queue)  # a number names a queue too (form fields are all text)
    chosen = choose_queue(system, app, requested_queue, node_count, ppn, memory or 0.0, run_time)
    queue = chosen.get("name") if chosen else None
    if memory is None:  # spec §4.1: the queue's maximum
        limit = _limit(chosen, "maxMemoryPerNode") if chosen else float("inf")
        memory = 0.0 if limit == float("inf") else limit
    if run_time is None and chosen and chosen.get("maxRequestedTime"):
        run_time = str(chosen["maxRequestedTime"])

    archive_raw = _pick(body, "archive")
    archive = True if archive_raw is None else _bool(archive_raw, "archive")
    archive_on_error = _pick(body, "archiveOnAppError")
    archive_on_error = False if archive_on_error is None else _bool(archive_on_error, "archiveOnAppError")

    job_id = new_job_id()
    archive_system = archive_path = None
    if archive:
        wanted = _pick(body, "archiveSystem")
        if wanted:
            storage = registry.get_system(str(wanted))
            if (
                storage is None
                or not access.may_use_system(storage, owner, is_admin)
                or storage.get("type") != "STORAGE"
            ):
                raise BadRequest(f"Invalid archiveSystem. No storage system found matching {wanted}")
        else:
            storage = registry.default_storage(owner)
            if storage is None:
                raise BadRequest(
                    "No default storage system found for archiving. Specify an archiveSystem or set archive to false."
                )
        archive_system = storage["id"]
        template = _pick(body, "archivePath")
        if template is not None and not isinstance(template, str):
            raise BadRequest("Invalid archivePath: must be a string.")
        archive_path = resolve_archive_path(
            template or f"{owner}/archive/jobs/job-{job_id}",
            {
                "APP_ID": app_id,
                "EXECUTION_SYSTEM": system_id,
                "BATCH_QUEUE": queue or "",
                "JOB_NAME": name,
                "JOB_ID": job_id,
                "JOB_NODE_COUNT": str(node_count),
                "JOB_PROCESSORS_PER_NODE": str(ppn),
                "JOB_MEMORY_PER_NODE": f"{memory:g}",
                "JOB_CREATED_TIME": now().strftime("%Y-%m-%dT%H-%M-%S"),
                "JOB_OWNER": owner,
                "ARCHIVE_SYSTEM": storage["id"],
                "TENANT_ID": "airjobs",
            },
        )

    notifications = subscriptions.parse(_pick(body, "notifications"), _pick(body, "callbackUrl"))
    t = now()
    return Job(
        id=job_id,
        name=name,
        owner=owner,
        app_id=app_id,
        execution_system=system_id,
        batch_queue=queue,
        node_count=node_count,
        processors_per_node=ppn,
        memory_per_node=memory,
        max_run_time=run_time,
        archive=archive,
        archive_system=archive_system,
        archive_path=archive_path,
        archive_on_app_error=archive_on_error,
        retries=0,
        status=JobStatus.PENDING.value,
        message=JobStatus.PENDING.description,
        submit_time=t,
        created=t,
        last_updated=t,
        inputs=inputs,
        parameters=parameters,
        notifications=notifications,
        request=body,
        visible=True,
        owner_admin=is_admin,
    )


def authorize(job: Job) -> None:
    """The access rule (``airjobs.access``) on everything the job will touch, before it is accepted: its
    execution system, every input (system, path, or another job's outputs) and its archive folder. A job
    naming something its owner may not use is refused here (403, or 400 for what they cannot see), so no
    step ever uses another user's system, Connection or files."""
    from airjobs import inputs

    owner, is_admin = job.owner, bool(job.owner_admin)
    app = registry.get_app(job.app_id) or {}
    system = registry.get_system(job.execution_system)
    if not (app.get("isPublic") or access.may_use_system(system, owner, is_admin)):
        raise Forbidden(f"Permission denied: {owner} may not use execution system {job.execution_system}.")
    for iid, values in (job.inputs or {}).items():
        for uri in values:
            try:
                inputs.locate(iid, uri, owner, is_admin)
            except inputs.InputError as e:
                cause = e.__context__
                raise (Forbidden if isinstance(cause, Forbidden) else BadRequest)(f"Invalid input value: {e}") from None
    if job.archive and job.archive_system:
        storage = registry.get_system(job.archive_system)
        if storage is None:  # deleted since the request was read
            raise BadRequest(f"Invalid archiveSystem. No storage system found matching {job.archive_system}")
        try:
            access.check_archive_target(storage, job.archive_path or "", owner, is_admin, registry.all_apps)
        except AgaveError as e:
            raise Forbidden(e.message) from None
