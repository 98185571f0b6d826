"""System and app descriptions (spec §11): defaults filled in, every refusal names its field."""

from __future__ import annotations

import copy

import pytest

from airjobs import registry, validation
from airjobs.errors import BadRequest, Forbidden

CONNECTIONS = {"ssh-ok", "sftp-ok"}


def check(conn_id: str) -> bool:
    return conn_id in CONNECTIONS


SSH_SYSTEM = {
    "id": "hpc.example.org",
    "name": "Example cluster",
    "type": "EXECUTION",
    "executionType": "HPC",
    "scheduler": "SLURM",
    "login": {"host": "login.example.org", "port": 22, "protocol": "SSH", "connectionId": "ssh-ok"},
    "storage": {
        "host": "login.example.org",
        "port": 22,
        "protocol": "SFTP",
        "rootDir": "/",
        "homeDir": "/home/alice",
        "connectionId": "sftp-ok",
    },
    "workDir": "/work",
    "scratchDir": "/scratch",
    "maxSystemJobs": 100,
    "queues": [
        {
            "name": "normal",
            "default": True,
            "maxJobs": 100,
            "maxUserJobs": 10,
            "maxNodes": 16,
            "maxProcessorsPerNode": 32,
            "maxMemoryPerNode": "64GB",
            "maxRequestedTime": "48:00:00",
        },
        {"name": "debug", "maxNodes": 1, "maxRequestedTime": "00:30:00"},
    ],
}


def system(**changes):
    doc = copy.deepcopy(SSH_SYSTEM)
    for key, value in changes.items():
        target, _, leaf = key.rpartition("__")
        node = doc
        for part in target.split("__") if target else []:
            node = node[part] if not part.isdigit() else node[int(part)]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return doc


def test_good_system_gets_defaults():
    doc = validation.validate_system(SSH_SYSTEM, check=check, is_admin=False)
    assert doc["status"] == "UP" and doc["public"] is False and doc["maxSystemJobsPerUser"] == -1
    debug = doc["queues"][1]
    assert debug["maxJobs"] == -1 and debug["default"] is False and debug["maxMemoryPerNode"] == -1


def test_execution_system_without_queues_gets_a_default_queue():
    doc = validation.validate_system(system(queues=None), check=check, is_admin=False)
    assert doc["queues"][0]["name"] == "normal" and doc["queues"][0]["default"] is True


SYSTEM_REFUSALS = [
    ({"id": None}, "Missing id"),
    ({"id": "bad id!"}, "Invalid id"),
    ({"name": None}, "Missing name"),
    ({"type": "COMPUTE"}, "Invalid type"),
    ({"executionType": "GRID"}, "Invalid executionType"),
    ({"scheduler": "COBALT"}, "Invalid scheduler"),
    ({"scheduler": "LOADLEVELER"}, "this service runs"),
    ({"scheduler": "FORK"}, "Invalid scheduler FORK for executionType HPC"),
    ({"executionType": "CLI"}, "Invalid scheduler SLURM for executionType CLI"),
    ({"login": None}, "Missing login"),
    ({"storage": None}, "Missing storage"),
    ({"login__protocol": "GSISSH"}, "Invalid login.protocol GSISSH"),
    ({"storage__protocol": "IRODS"}, "Invalid storage.protocol IRODS"),
    ({"storage__protocol": "CARRIER-PIGEON"}, "Invalid storage.protocol"),
    ({"login__host": None}, "Missing login.host"),
    ({"login__host": "a;rm -rf /"}, "Invalid login.host"),
    ({"login__port": 70000}, "login.port"),
    ({"login__connectionId": None}, "Missing login.connectionId"),
    ({"login__connectionId": "nope"}, "no Airflow Connection named 'nope'"),
    ({"storage__connectionId": "nope"}, "storage.connectionId"),
    ({"login__auth": {"type": "PASSWORD", "username": "u", "password": "p"}}, "credentials (password)"),
    ({"storage__rootDir": "relative"}, "storage.rootDir"),
    ({"workDir": "/work/../etc"}, "workDir"),
    ({"maxSystemJobs": "lots"}, "maxSystemJobs"),
    ({"maxSystemJobs": 0}, "maxSystemJobs"),
    ({"queues": "normal"}, "Invalid queues"),
    ({"queues__0__name": None}, "queues[0].name"),
    ({"queues__1__name": "normal"}, "unique"),
    ({"queues__1__default": True}, "at most one queue"),
    ({"queues__0__maxRequestedTime": "2 days"}, "queues[0].maxRequestedTime"),
    ({"queues__0__maxMemoryPerNode": "much"}, "queues[0].maxMemoryPerNode"),
    ({"queues__0__maxNodes": "x"}, "queues[0].maxNodes"),
    ({"queues__0__customDirectives": ["#SBATCH -A x"]}, "customDirectives"),
]


@pytest.mark.parametrize("changes,fragment", SYSTEM_REFUSALS, ids=[f for _, f in SYSTEM_REFUSALS])
def test_system_refusals(changes, fragment):
    with pytest.raises(BadRequest) as e:
        validation.validate_system(system(**changes), check=check, is_admin=False)
    assert fragment in e.value.message


def test_only_admins_publish_or_use_local():
    with pytest.raises(Forbidden):
        validation.validate_system(system(public=True), check=check, is_admin=False)
    with pytest.raises(Forbidden, match="LOCAL"):
        validation.validate_system(system(login__protocol="LOCAL"), check=check, is_admin=False)
    assert validation.validate_system(system(public=True), check=check, is_admin=True)["public"] is True


APP = {
    "name": "sleeper",
    "version": "0.1",
    "executionSystem": "hpc.example.org",
    "executionType": "HPC",
    "parallelism": "SERIAL",
    "deploymentPath": "alice/apps/sleeper",
    "templatePath": "run.sh",
    "deploymentSystem": "demo-storage",
    "defaultQueue": "normal",
    "inputs": [{"id": "data", "value": {"required": True}}],
    "parameters": [{"id": "seconds", "value": {"type": "number", "default": 1}}],
}


@pytest.fixture()
def hpc(pg):
    registry.put_system(validation.validate_system(SSH_SYSTEM, check=check, is_admin=False), "alice")


def app(**changes):
    doc = copy.deepcopy(APP)
    doc.update({k: v for k, v in changes.items() if v is not None})
    for k in [k for k, v in changes.items() if v is None]:
        doc.pop(k, None)
    return doc


def validate(doc, owner="alice", is_admin=False):
    return validation.validate_app(
        doc, owner=owner, get_system=registry.get_system, default_storage=registry.default_storage, is_admin=is_admin
    )


def test_good_app(hpc):
    doc = validate(APP)
    assert doc["id"] == "sleeper-0.1"
    assert doc["inputs"][0]["semantics"] == {"minCardinality": 1, "maxCardinality": 1}
    assert doc["parameters"][0]["value"]["required"] is True
    assert validate(app(deploymentSystem=None))["deploymentSystem"] == "demo-storage"


APP_REFUSALS = [
    ({"name": None}, "Missing name"),
    ({"version": "one"}, "Invalid version"),
    ({"executionSystem": "nowhere"}, "no system found matching nowhere"),
    ({"executionSystem": "demo-storage"}, "not a EXECUTION system"),
    ({"deploymentSystem": "hpc.example.org"}, "not a STORAGE system"),
    ({"executionType": "CONDOR"}, "Invalid executionType"),
    ({"parallelism": "MPI"}, "Invalid parallelism"),
    ({"deploymentPath": None}, "Missing deploymentPath"),
    ({"templatePath": "../../etc/passwd"}, "templatePath"),
    ({"defaultQueue": "gpu"}, "no queue named gpu"),
    ({"defaultNodeCount": 99}, "queue normal allows at most 16"),
    ({"defaultMaxRunTime": "1 hour"}, "defaultMaxRunTime"),
    ({"modules": ["load x\nrm -rf /"]}, "modules"),
    ({"inputs": [{"id": "1st"}]}, "inputs[0].id"),
    ({"inputs": [{"id": "a"}, {"id": "A"}]}, "unique"),
    ({"parameters": [{"id": "data", "value": {"type": "string"}}]}, "unique across inputs and parameters"),
    ({"parameters": [{"id": "p", "value": {"type": "float"}}]}, "parameters[0].value.type"),
    ({"parameters": [{"id": "p", "value": {"type": "enumeration"}}]}, "enumValues"),
    ({"parameters": [{"id": "p", "value": {"type": "string", "validator": "(unclosed"}}]}, "validator"),
    ({"parameters": [{"id": "p", "value": {"type": "string", "visible": False, "required": True}}]}, "needs a default"),
    ({"inputs": [{"id": "x", "semantics": {"minCardinality": 2, "maxCardinality": 1}}]}, "maxCardinality"),
    ({"inputs": [{"id": "x", "details": {"argument": "-a\nrm"}}]}, "argument"),
]


@pytest.mark.parametrize("changes,fragment", APP_REFUSALS, ids=[f for _, f in APP_REFUSALS])
def test_app_refusals(hpc, changes, fragment):
    with pytest.raises(BadRequest) as e:
        validate(app(**changes))
    assert fragment in e.value.message


def test_apps_on_the_service_host_are_for_admins(hpc):
    with pytest.raises(Forbidden, match="service's own host"):
        validate(app(executionSystem="demo-fork", executionType="CLI"))
    assert validate(app(executionSystem="demo-fork", executionType="CLI", defaultQueue=None), is_admin=True)


@pytest.mark.parametrize("path", ["bob/apps/sleeper", "/apps/wc-1.0", "/"])
def test_the_deployment_folder_must_be_one_the_owner_may_read(hpc, path):
    with pytest.raises(Forbidden, match="may not read deploymentPath"):
        validate(app(deploymentPath=path))


def test_someone_elses_private_system_is_invisible(hpc):
    with pytest.raises(BadRequest, match="no system found"):
        validate(APP, owner="mallory")
