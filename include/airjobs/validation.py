"""Validation of system and app descriptions (spec §11.1, §11.2).

Each function returns the normalised document (defaults filled in) or raises ``BadRequest`` naming the
field and the reason. Credentials are never accepted in a description: a system names an Airflow
Connection (``login.connectionId`` / ``storage.connectionId``) instead.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from airjobs import access
from airjobs.errors import BadRequest, Forbidden
from airjobs.submission import RUNTIME_RE, parse_memory_gb

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ITEM_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
VERSION_RE = re.compile(r"^\d+(\.\d+)*$")

EXECUTION_TYPES = {"HPC", "CLI", "CONDOR"}
SCHEDULERS = {
    "FORK",
    "SLURM",
    "CUSTOM_SLURM",
    "PBS",
    "CUSTOM_PBS",
    "TORQUE",
    "CUSTOM_TORQUE",
    "MOAB",
    "CUSTOM_MOAB",
    "SGE",
    "CUSTOM_GRIDENGINE",
    "LSF",
    "CUSTOM_LSF",
    "CONDOR",
    "CUSTOM_CONDOR",
    "LOADLEVELER",
    "CUSTOM_LOADLEVELER",
    "UNKNOWN",
}
#: what this service can actually run (spec D11)
SUPPORTED_SCHEDULERS = {
    "FORK",
    "SLURM",
    "CUSTOM_SLURM",
    "PBS",
    "CUSTOM_PBS",
    "TORQUE",
    "CUSTOM_TORQUE",
    "SGE",
    "CUSTOM_GRIDENGINE",
    "LSF",
    "CUSTOM_LSF",
    "CONDOR",
    "CUSTOM_CONDOR",
}
LOGIN_PROTOCOLS = {"SSH", "LOCAL"}
STORAGE_PROTOCOLS = {"SFTP", "LOCAL"}
KNOWN_STORAGE_PROTOCOLS = {
    "SFTP",
    "FTP",
    "GRIDFTP",
    "IRODS",
    "IRODS4",
    "LOCAL",
    "AZURE",
    "S3",
    "SWIFT",
    "HTTP",
    "HTTPS",
}
SECRET_KEYS = {"password", "privateKey", "publicKey", "credential", "token", "secret", "passphrase"}
PARAM_TYPES = {"string", "number", "enumeration", "bool", "flag"}
PARALLELISM = {"SERIAL", "PARALLEL", "PTHREAD"}

ConnectionCheck = Callable[[str], bool]


#: a Connection to write once the description is valid: (conn_id, conn_type, host, port, login, password, extra)
PendingConnection = tuple[str, str, str, int, str | None, str | None, dict[str, Any]]


def extract_credentials(
    doc: Any, existing: Callable[[str], dict[str, Any] | None], *, owner: str
) -> tuple[Any, list[PendingConnection]]:
    """Agave descriptions carry credentials inline (``login.auth``/``storage.auth``). They are moved into an
    Airflow Connection named ``airjobs-<system id>-<login|storage>`` and the description keeps only its id,
    so unchanged Agave JSON registers while no secret reaches the project's tables. The Connection records
    ``owner`` (``extra.airjobs_owner``): only that user (and admins) may name it (``airjobs.access``).

    Nothing is written here: the Connections come back to be written once the description validated (a refused
    description leaves none behind). ``existing(conn_id)`` is a Connection's extra, None when there is none;
    one that exists is replaced only when it is the system owner's own (never another user's, even if a
    system of that id was deleted and its id registered again). Callers check first that the caller may
    change the system."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not ID_RE.match(doc["id"]):
        return doc, []
    doc = copy.deepcopy(doc)
    pending: list[PendingConnection] = []
    for section_name, conn_type in (("login", "ssh"), ("storage", "sftp")):
        section = doc.get(section_name)
        if not isinstance(section, dict) or section.get("connectionId"):
            continue
        auth = section.get("auth")
        if not isinstance(auth, dict) or not any(auth.get(k) for k in ("password", "privateKey")):
            continue
        protocol = str(section.get("protocol") or "").upper()
        if protocol not in ("SSH", "SFTP"):
            continue
        for key in ("username", "password", "privateKey", "publicKey"):  # a Connection's fields are text
            if auth.get(key) is not None and not isinstance(auth[key], str):
                raise BadRequest(f"Invalid {section_name}.auth.{key}: must be a string.")
        conn_id = f"airjobs-{doc['id']}-{section_name}"
        current = existing(conn_id)
        if current is not None and current.get("airjobs_owner") != owner:
            raise BadRequest(
                f"Invalid {section_name}.auth: an Airflow Connection named {conn_id} already exists; "
                f"name it in {section_name}.connectionId instead of sending credentials."
            )
        extra: dict[str, Any] = {"airjobs_owner": owner}
        if auth.get("privateKey"):
            extra["private_key"] = auth["privateKey"]
        if auth.get("privateKey") and auth.get("password"):
            extra["private_key_passphrase"] = auth["password"]
        try:
            port = int(section.get("port") or 22)
        except (TypeError, ValueError, OverflowError):
            raise BadRequest(f"Invalid {section_name}.port: must be an integer.") from None
        pending.append(
            (
                conn_id,
                conn_type,
                str(section.get("host") or ""),
                port,
                auth.get("username"),
                None if auth.get("privateKey") else auth.get("password"),
                extra,
            )
        )
        section["connectionId"] = conn_id
        section["auth"] = {"type": auth.get("type"), "username": auth.get("username")}
    return doc, pending


def _obj(doc: Any, field: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise BadRequest(f"Invalid {field}: must be a JSON object.")
    return doc


def _str(doc: dict[str, Any], field: str, *, required: bool = False, max_len: int = 1024, path: str = "") -> str | None:
    name = path + field
    value = doc.get(field)
    if value is None or value == "":
        if required:
            raise BadRequest(f"Missing {name}: it is required.")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"Invalid {name}: must be a string.")
    if len(value) > max_len:
        raise BadRequest(f"Invalid {name}: at most {max_len} characters.")
    return value


def _req(doc: dict[str, Any], field: str, *, max_len: int = 1024, path: str = "") -> str:
    """A string field that must be given (``_str`` with ``required``)."""
    value = _str(doc, field, required=True, max_len=max_len, path=path)
    if value is None:  # _str raised for a missing one already
        raise BadRequest(f"Missing {path + field}: it is required.")
    return value


def _int(doc: dict[str, Any], field: str, default: int, *, minimum: int = -1, path: str = "") -> int:
    value = doc.get(field, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BadRequest(f"Invalid {path}{field}: must be an integer.")
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"Invalid {path}{field}: must be an integer.") from None
    if n > 2**31 - 1:
        raise BadRequest(f"Invalid {path}{field} {value!r}: at most {2**31 - 1}.")
    if n < minimum or (n == 0 and minimum == -1 and field.startswith("max")):
        raise BadRequest(f"Invalid {path}{field} {value!r}: must be a positive integer or -1 for unlimited.")
    return n


def _bool(doc: dict[str, Any], field: str, default: bool, path: str = "") -> bool:
    value = doc.get(field, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadRequest(f"Invalid {path}{field}: must be true or false.")


def _no_secrets(section: dict[str, Any], path: str) -> None:
    auth = section.get("auth")
    found = [k for k in (auth or {}) if k in SECRET_KEYS] if isinstance(auth, dict) else []
    found += [k for k in section if k in SECRET_KEYS]
    if found:
        raise BadRequest(
            f"Invalid {path}: credentials ({', '.join(sorted(found))}) are not stored by this service. Create an "
            f"Airflow Connection holding them and name it in {path}.connectionId."
        )


def _endpoint(
    section: dict[str, Any],
    path: str,
    protocols: set[str],
    known: set[str],
    check: ConnectionCheck,
    is_admin: bool,
    guard: bool,
) -> dict[str, Any]:
    section = dict(_obj(section, path))
    _no_secrets(section, path)
    protocol = str(section.get("protocol") or "").upper()
    if not protocol:
        raise BadRequest(f"Missing {path}.protocol: it is required.")
    if protocol not in protocols:
        if protocol in known:
            raise BadRequest(
                f"Invalid {path}.protocol {protocol}: this service supports {', '.join(sorted(protocols))}."
            )
        raise BadRequest(f"Invalid {path}.protocol {protocol!r}: must be one of {', '.join(sorted(known))}.")
    section["protocol"] = protocol
    if protocol == "LOCAL":
        if not is_admin:
            raise Forbidden(
                f"Only administrators may register {path}.protocol LOCAL (it reads the service's own host)."
            )
        section.setdefault("host", "localhost")
        return section
    host = _req(section, "host", max_len=255, path=path + ".")
    if not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", host or ""):
        raise BadRequest(f"Invalid {path}.host {host!r}: must be a host name or address.")
    section["port"] = _int(section, "port", 22, minimum=1, path=path + ".")
    if section["port"] > 65535:
        raise BadRequest(f"Invalid {path}.port: at most 65535.")
    if guard:
        from airjobs import egress

        try:
            egress.check_host(host, section["port"])
        except egress.EgressRefused as e:
            raise BadRequest(f"Invalid {path}.host: {e.message}") from None
    conn = _req(section, "connectionId", max_len=250, path=path + ".")
    if not check(conn):  # missing, or not one the caller may use: the same answer, so names stay private
        raise BadRequest(
            f"Invalid {path}.connectionId: no Airflow Connection named {conn!r} exists that you may use. Create "
            "it first (airflow connections add ...), or ask an administrator to assign it to you "
            "(extra.airjobs_users)."
        )
    return section


def _queue(q: Any, i: int) -> dict[str, Any]:
    path = f"queues[{i}]."
    q = dict(_obj(q, f"queues[{i}]"))
    name = _req(q, "name", max_len=128, path=path)
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name or ""):
        raise BadRequest(f"Invalid {path}name {name!r}: letters, digits, '_', '.', '@' and '-' only.")
    out: dict[str, Any] = {
        "name": name,
        "mappedName": _str(q, "mappedName", max_len=128, path=path) or None,
        "description": _str(q, "description", path=path),
        "default": _bool(q, "default", False, path),
    }
    for field in ("maxJobs", "maxUserJobs", "maxNodes", "maxProcessorsPerNode"):
        out[field] = _int(q, field, -1, path=path)
    mem = q.get("maxMemoryPerNode", -1)
    if mem in (-1, "-1", None):
        out["maxMemoryPerNode"] = -1
    else:
        try:
            parse_memory_gb(mem, f"{path}maxMemoryPerNode")
        except BadRequest as e:
            raise BadRequest(e.message) from None
        out["maxMemoryPerNode"] = mem
    rt = q.get("maxRequestedTime") or "999:59:59"
    if not isinstance(rt, str) or not RUNTIME_RE.match(rt):
        raise BadRequest(f"Invalid {path}maxRequestedTime {rt!r}: must be in hh:mm:ss format.")
    out["maxRequestedTime"] = rt
    directives = q.get("customDirectives")
    if directives is not None and not isinstance(directives, str):
        raise BadRequest(f"Invalid {path}customDirectives: must be a string.")
    out["customDirectives"] = directives
    return out


def validate_system(given: Any, *, check: ConnectionCheck, is_admin: bool, guard: bool | None = None) -> dict[str, Any]:
    """``guard``: the system is reached only where the egress guard allows (default: unless an admin registers
    it; an admin changing a user's system keeps it guarded)."""
    guard = (not is_admin) if guard is None else guard
    doc = copy.deepcopy(_obj(given, "system description"))
    sid = _req(doc, "id", max_len=64)
    if not ID_RE.match(sid or ""):
        raise BadRequest(f"Invalid id {sid!r}: letters, digits, '_', '.' and '-', starting with a letter or digit.")
    _req(doc, "name", max_len=64)
    stype = str(doc.get("type") or "").upper()
    if stype not in ("STORAGE", "EXECUTION"):
        raise BadRequest("Invalid type: must be STORAGE or EXECUTION.")
    doc["type"] = stype
    status = str(doc.get("status") or "UP").upper()
    if status not in ("UP", "DOWN", "MAINTENANCE", "UNKNOWN"):
        raise BadRequest("Invalid status: must be UP, DOWN, MAINTENANCE or UNKNOWN.")
    doc["status"] = status
    doc["available"] = _bool(doc, "available", True)
    doc["public"] = _bool(doc, "public", False)
    # a user's own system is reached only where the egress guard allows, checked at every connection too
    doc["egressGuard"] = guard
    doc["globalDefault"] = _bool(doc, "globalDefault", False)
    if (doc["public"] or doc["globalDefault"]) and not is_admin:
        raise Forbidden("Only administrators may publish a system (public or globalDefault).")
    if "storage" not in doc:
        raise BadRequest("Missing storage: it is required.")
    doc["storage"] = _endpoint(
        doc["storage"], "storage", STORAGE_PROTOCOLS, KNOWN_STORAGE_PROTOCOLS, check, is_admin, guard
    )
    storage = doc["storage"]
    storage["rootDir"] = _str(storage, "rootDir", path="storage.") or "/"
    storage["homeDir"] = _str(storage, "homeDir", path="storage.") or "/"
    if not storage["rootDir"].startswith("/"):
        raise BadRequest("Invalid storage.rootDir: must be an absolute path.")
    shared = doc.get("publishedPaths") or []
    if not isinstance(shared, list) or any(
        not isinstance(p, str) or not p.strip("/") or "\x00" in p or ".." in p.split("/") for p in shared
    ):
        raise BadRequest("Invalid publishedPaths: a list of folders (no '..') that every user may read.")
    doc["publishedPaths"] = shared
    if stype == "STORAGE":
        for field in ("login", "queues", "scheduler", "executionType"):
            doc.pop(field, None)
        return doc

    etype = str(doc.get("executionType") or "").upper()
    if etype not in EXECUTION_TYPES:
        raise BadRequest("Invalid executionType: must be HPC, CLI or CONDOR.")
    doc["executionType"] = etype
    scheduler = str(doc.get("scheduler") or "").upper()
    if scheduler not in SCHEDULERS:
        raise BadRequest(f"Invalid scheduler {doc.get('scheduler')!r}: must be one of {', '.join(sorted(SCHEDULERS))}.")
    if scheduler not in SUPPORTED_SCHEDULERS:
        raise BadRequest(f"Invalid scheduler {scheduler}: this service runs {', '.join(sorted(SUPPORTED_SCHEDULERS))}.")
    allowed = {"CLI": {"FORK"}, "CONDOR": {"CONDOR", "CUSTOM_CONDOR"}}.get(etype, SUPPORTED_SCHEDULERS - {"FORK"})
    if scheduler not in allowed:
        raise BadRequest(f"Invalid scheduler {scheduler} for executionType {etype}.")
    doc["scheduler"] = scheduler
    if "login" not in doc:
        raise BadRequest("Missing login: it is required for execution systems.")
    doc["login"] = _endpoint(
        doc["login"], "login", LOGIN_PROTOCOLS, LOGIN_PROTOCOLS | {"GSISSH", "API"}, check, is_admin, guard
    )
    for field in ("workDir", "scratchDir"):
        value = _str(doc, field)
        if value is not None and ("\x00" in value or ".." in value.split("/")):
            raise BadRequest(f"Invalid {field}: may not contain '..'.")
    for field in ("environment", "startupScript"):
        _str(doc, field, max_len=32768)
    doc["maxSystemJobs"] = _int(doc, "maxSystemJobs", -1)
    doc["maxSystemJobsPerUser"] = _int(doc, "maxSystemJobsPerUser", -1)
    queues = doc.get("queues") or [{"name": "normal", "default": True}]
    if not isinstance(queues, list):
        raise BadRequest("Invalid queues: must be an array of queue objects.")
    doc["queues"] = [_queue(q, i) for i, q in enumerate(queues)]
    names = [q["name"] for q in doc["queues"]]
    if len(set(names)) != len(names):
        raise BadRequest("Invalid queues: queue names must be unique.")
    if sum(q["default"] for q in doc["queues"]) > 1:
        raise BadRequest("Invalid queues: at most one queue may be the default.")
    return doc


def _item(given: Any, kind: str, i: int, seen: set[str]) -> dict[str, Any]:
    path = f"{kind}[{i}]"
    item = copy.deepcopy(_obj(given, path))
    iid = _req(item, "id", max_len=64, path=path + ".")
    if not ITEM_ID_RE.match(iid or ""):
        raise BadRequest(f"Invalid {path}.id {iid!r}: letters, digits and '_', not starting with a digit.")
    if iid.lower() in seen:
        raise BadRequest(f"Invalid {path}.id {iid!r}: ids must be unique across inputs and parameters.")
    seen.add(iid.lower())
    value = dict(_obj(item.get("value") or {}, path + ".value"))
    details = dict(_obj(item.get("details") or {}, path + ".details"))
    semantics = dict(_obj(item.get("semantics") or {}, path + ".semantics"))
    visible = _bool(value, "visible", True, path + ".value.")
    value["visible"] = visible
    arg = details.get("argument")
    if arg is not None and (not isinstance(arg, str) or "\n" in arg or len(arg) > 64):
        raise BadRequest(f"Invalid {path}.details.argument: a single line of at most 64 characters.")
    for field in ("showArgument", "repeatArgument"):
        details[field] = _bool(details, field, False, path + ".details.")
    validator = value.get("validator")
    if validator not in (None, ""):
        if not isinstance(validator, str) or len(validator) > 255:
            raise BadRequest(f"Invalid {path}.value.validator: a regular expression of at most 255 characters.")
        import regex  # the engine that runs validators (``submission._validator``)

        try:
            regex.compile(validator, flags=regex.VERSION0)
        except regex.error as e:
            raise BadRequest(f"Invalid {path}.value.validator {validator!r}: {e}.") from None
    if kind == "parameters":
        ptype = str(value.get("type") or "").lower()
        if ptype not in PARAM_TYPES:
            raise BadRequest(f"Invalid {path}.value.type: must be one of {', '.join(sorted(PARAM_TYPES))}.")
        value["type"] = ptype
        value["required"] = _bool(value, "required", True, path + ".value.")
        if ptype == "enumeration":
            enum = value.get("enumValues") or value.get("enum_values")
            if not isinstance(enum, list) or not enum:
                raise BadRequest(f"Invalid {path}.value.enumValues: an enumeration needs a list of values.")
    else:
        value["required"] = _bool(value, "required", not visible, path + ".value.")
    lo = _int(
        semantics,
        "minCardinality",
        1 if kind == "inputs" and (value["required"] or not visible) else 0,
        minimum=0,
        path=path + ".semantics.",
    )
    hi = _int(semantics, "maxCardinality", 1 if kind != "outputs" else -1, path=path + ".semantics.")
    if hi != -1 and hi < lo:
        raise BadRequest(f"Invalid {path}.semantics.maxCardinality: smaller than minCardinality.")
    semantics.update(minCardinality=lo, maxCardinality=hi)
    if not visible and value["required"] and value.get("default") in (None, "", []):
        raise BadRequest(f"Invalid {path}.value.default: a hidden required {kind[:-1]} needs a default.")
    item.update(value=value, details=details, semantics=semantics)
    return item


def validate_app(
    given: Any,
    *,
    owner: str,
    get_system: Callable[[str], dict[str, Any] | None],
    default_storage: Callable[[str], dict[str, Any] | None],
    is_admin: bool,
    apps: access.AppsArg = (),
    owner_is_admin: bool | None = None,
) -> dict[str, Any]:
    """``apps``: the registered apps (others' deployment folders are no user's to read). ``owner_is_admin``:
    whether the app's owner is an admin (default ``is_admin``; False when an admin changes a user's app), for
    the rule that the owner may read the deployment folder."""
    owner_is_admin = is_admin if owner_is_admin is None else owner_is_admin
    doc = copy.deepcopy(_obj(given, "app description"))
    name = _req(doc, "name", max_len=64)
    if not ID_RE.match(name or ""):
        raise BadRequest(f"Invalid name {name!r}: letters, digits, '_', '.' and '-'.")
    version = doc.get("version")
    if isinstance(version, (int, float)):
        version = str(version)
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise BadRequest("Invalid version: must look like 1.0 or 2.3.1.")
    doc["version"] = version
    app_id = f"{name}-{version}"
    if len(app_id) > 80:
        raise BadRequest("Invalid name: name-version is at most 80 characters.")
    if _bool(doc, "isPublic", False) and not is_admin:
        raise Forbidden("Only administrators may publish an app (isPublic).")

    def visible_system(sid: str, field: str, kind: str) -> dict[str, Any]:
        system = get_system(sid)
        if system is None or not (is_admin or system.get("public") or system.get("owner") == owner):
            raise BadRequest(f"Invalid {field}: no system found matching {sid}.")
        if system.get("type") != kind:
            raise BadRequest(f"Invalid {field}: {sid} is not a {kind} system.")
        return system

    exec_id = _req(doc, "executionSystem", max_len=64)
    system = visible_system(exec_id, "executionSystem", "EXECUTION")
    if str((system.get("login") or {}).get("protocol", "")).upper() == "LOCAL" and not is_admin:
        raise Forbidden(
            f"Only administrators may register apps on {exec_id}: it runs on the service's own host, where a "
            "wrapper template would run with the service's rights. Register your own SSH system instead."
        )
    etype = str(doc.get("executionType") or system.get("executionType") or "").upper()
    compatible = {"HPC": {"HPC", "CLI"}, "CLI": {"CLI"}, "CONDOR": {"CONDOR"}}[system["executionType"]]
    if etype not in compatible:
        raise BadRequest(
            f"Invalid executionType {etype or None}: system {exec_id} runs {', '.join(sorted(compatible))} apps."
        )
    doc["executionType"] = etype
    parallelism = str(doc.get("parallelism") or "SERIAL").upper()
    if parallelism not in PARALLELISM:
        raise BadRequest("Invalid parallelism: must be SERIAL, PARALLEL or PTHREAD.")
    doc["parallelism"] = parallelism
    deploy_id = _str(doc, "deploymentSystem", max_len=64)
    if deploy_id is None:
        default = default_storage(owner)
        if default is None:
            raise BadRequest("Missing deploymentSystem: you have no default storage system.")
        deploy_id = default["id"]
    deploy_system = visible_system(deploy_id, "deploymentSystem", "STORAGE")
    doc["deploymentSystem"] = deploy_id
    deployment_path = _req(doc, "deploymentPath")
    template_path = _req(doc, "templatePath")
    for field, value in (("deploymentPath", deployment_path), ("templatePath", template_path)):
        if "\x00" in value or ".." in value.split("/"):
            raise BadRequest(f"Invalid {field}: may not contain '..'.")
    # every job copies the deployment folder: it must be one the app's owner may read
    access.check_path(
        deploy_system, deployment_path, owner, owner_is_admin, write=False, what="deploymentPath", apps=apps
    )
    queues = {q["name"]: q for q in system.get("queues") or []}
    queue_name = _str(doc, "defaultQueue", max_len=128)
    if queue_name is not None and queue_name not in queues:
        raise BadRequest(f"Invalid defaultQueue: no queue named {queue_name} on system {exec_id}.")
    queue = queues.get(queue_name or "") or next((q for q in queues.values() if q.get("default")), None)
    for field, limit in (("defaultNodeCount", "maxNodes"), ("defaultProcessorsPerNode", "maxProcessorsPerNode")):
        if doc.get(field) in (None, -1, "-1"):
            continue
        n = _int(doc, field, 1, minimum=1)
        doc[field] = n
        if queue and queue.get(limit, -1) not in (-1, None) and n > int(queue[limit]):
            raise BadRequest(f"Invalid {field} {n}: queue {queue['name']} allows at most {queue[limit]}.")
    if doc.get("defaultMemoryPerNode") not in (None, -1, "-1", ""):
        parse_memory_gb(doc["defaultMemoryPerNode"], "defaultMemoryPerNode")
    rt = doc.get("defaultMaxRunTime")
    if rt not in (None, "") and (not isinstance(rt, str) or not RUNTIME_RE.match(rt)):
        raise BadRequest(f"Invalid defaultMaxRunTime {rt!r}: must be in hh:mm:ss format.")
    modules = doc.get("modules") or []
    if not isinstance(modules, list) or any(not isinstance(m, str) or "\n" in m for m in modules):
        raise BadRequest("Invalid modules: a list of single-line strings.")
    seen: set[str] = set()
    for kind in ("inputs", "parameters", "outputs"):
        items = doc.get(kind) or []
        if not isinstance(items, list):
            raise BadRequest(f"Invalid {kind}: must be an array.")
        doc[kind] = [_item(item, kind, i, seen if kind != "outputs" else set()) for i, item in enumerate(items)]
    doc.pop("users", None)  # no per-app users list: private apps are their owner's (airjobs.access)
    doc["id"] = app_id
    return doc
