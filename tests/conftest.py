"""Shared fixtures: a real embedded PostgreSQL for the core, and the whole service (api-server, scheduler,
dag-processor, triggerer) for end-to-end tests. Nothing of Airflow is mocked."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
for sub in ("include", "plugins"):
    if str(CHECKOUT / sub) not in sys.path:
        sys.path.insert(0, str(CHECKOUT / sub))

# one short var dir per test session (unix socket paths are limited to ~107 bytes)
VAR = Path(os.environ.get("AIRJOBS_TEST_VAR") or tempfile.mkdtemp(prefix="ajt-", dir="/tmp"))
PORT = int(os.environ.get("AIRJOBS_TEST_PORT", "28080"))
os.environ["AIRJOBS_VAR"] = str(VAR)
os.environ["AIRJOBS_PORT"] = str(PORT)
os.environ.pop("AIRJOBS_DB_URL", None)
# status checks every second or two instead of Agave's 15 s, 30 s, 60 s, 5 min (airjobs.checks.schedule)
os.environ.setdefault("AIRJOBS_POLL_SCHEDULE", "1,1,2,3")


def _egress_allow() -> str:
    """The tests' own HTTP servers (on 127.0.0.2) and the test host's sshd (a port of 127.0.0.1, where the
    service itself listens and stays refused): everything else the egress guard refuses."""
    allow = ["127.0.0.2"]
    env = Path(os.environ.get("AIRJOBS_INFRA_ENV") or "/nonexistent")
    if env.is_file():
        infra = dict(line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)
        allow.append(f"{infra.get('AIRJOBS_SSH_HOST', '127.0.0.1')}:{infra.get('AIRJOBS_SSH_PORT', '2222')}")
    return ",".join(allow)


os.environ.setdefault("AIRJOBS_EGRESS_ALLOW", _egress_allow())
#: the SMTP server of the notification tests (aiosmtpd on 127.0.0.2, started by them): the service's e-mail goes
#: through Airflow's ``smtp_default`` Connection, defined the Airflow way, in the environment
SMTP_PORT = PORT + 25
os.environ.setdefault(
    "AIRFLOW_CONN_SMTP_DEFAULT",
    json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.2",
            "port": SMTP_PORT,
            "extra": {
                "disable_ssl": True,
                "disable_tls": True,
                "from_email": "airjobs@localhost",
                "retry_limit": 0,
                "timeout": 10,
            },
        }
    ),
)
os.environ.setdefault("XDG_RUNTIME_DIR", str(VAR / "xdg"))
(VAR / "xdg").mkdir(parents=True, exist_ok=True, mode=0o700)
os.chmod(VAR / "xdg", 0o700)

USERS = {
    "admin": ("admin-pw-1", "Admin"),
    "alice": ("alice-pw-1", "Agave User"),
    "bob": ("bob-pw-1", "Agave User"),
    "carol": ("carol-pw-1", "Agave User"),
    # the fuzz test's own job user (tests/plugins/test_schemathesis_e2e.py): nobody else uses it
    "fuzzer": ("fuzzer-pw-1", "Agave User"),
}


@pytest.fixture(scope="session")
def pg():
    """The embedded PostgreSQL with the project's tables migrated and the demo registered."""
    from airjobs import db, demo, pgserver

    pgserver.start()
    db.migrate()
    demo.register()
    yield
    pgserver.stop()  # idempotent: the service fixture, torn down first, may have stopped it already


class Service:
    """A running service at ``base`` (``http://127.0.0.1:<port>``, or ``https://...`` verified with the CA
    file ``ca``, e.g. the service's self-signed certificate; the system's CAs otherwise)."""

    def __init__(self, base: str, ca: str | None = None):
        import ssl

        self.base = base
        self.ca = ca
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
        self._tokens: dict[str, str] = {}

    @property
    def host_port(self) -> tuple[str, int]:
        from urllib.parse import urlsplit

        url = urlsplit(self.base)
        return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)

    def raw_get(self, path: str, token: str, timeout: float = 60) -> tuple[int, bytes]:
        """GET with the path exactly as written (httpx would normalise ``..`` or re-quote it)."""
        import http.client

        if self.base.startswith("https:"):
            context = self.verify if not isinstance(self.verify, bool) else None
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                *self.host_port, timeout=timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(*self.host_port, timeout=timeout)
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, body

    def token(self, user: str = "alice") -> str:
        if user not in self._tokens:
            r = httpx.post(
                f"{self.base}/token",
                data={"grant_type": "password", "username": user, "password": USERS[user][0]},
                timeout=30,
                verify=self.verify,
            )
            r.raise_for_status()
            self._tokens[user] = r.json()["access_token"]
        return self._tokens[user]

    def client(self, user: str | None = "alice") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60, verify=self.verify)

    def airflow_token(self) -> str:
        r = httpx.post(
            f"{self.base}/auth/token",
            json={"username": "admin", "password": USERS["admin"][0]},
            timeout=30,
            verify=self.verify,
        )
        r.raise_for_status()
        return r.json()["access_token"]

    def job(self, job_id: str, user: str = "admin") -> dict:
        with self.client(user) as c:
            return c.get(f"/jobs/v2/{job_id}").json()["result"]

    def history(self, job_id: str, user: str = "admin") -> list[dict]:
        with self.client(user) as c:
            return c.get(f"/jobs/v2/{job_id}/history").json()["result"]

    def wait_terminal(self, job_id: str, user: str = "alice", timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        with self.client(user) as c:
            while time.monotonic() < deadline:
                job = c.get(f"/jobs/v2/{job_id}").json()["result"]
                if job["status"] in ("FINISHED", "FAILED", "STOPPED", "KILLED"):
                    return job
                time.sleep(0.3)
        raise AssertionError(f"job {job_id} not terminal after {timeout}s: {job['status']}")


@pytest.fixture(scope="session")
def service(pg):
    """The real service, started like `make run` (embedded PostgreSQL, all four Airflow components). Plain HTTP;
    with AIRJOBS_TLS=self-signed (or AIRJOBS_TLS_CERT/KEY) in the environment, HTTPS, trusted by the tests'
    clients (the ``Service`` helper, and httpx through SSL_CERT_FILE)."""
    from airjobs import service as runner
    from airjobs import tls

    env = {**os.environ, "AIRJOBS_ADMIN_PASSWORD": USERS["admin"][0]}
    users = [f"{name}:{pw}:{role}" for name, (pw, role) in USERS.items() if name != "admin"]
    https = tls.settings()  # generates a self-signed certificate into VAR; the service reuses it
    proc = runner.spawn(users, VAR / "service-test.log", env)
    if https:
        os.environ["SSL_CERT_FILE"] = str(https.cert)  # for the tests' own httpx calls to service.base
        yield Service(tls.base_url(https, "localhost" if https.self_signed else https.host, PORT), str(https.cert))
    else:
        yield Service(f"http://127.0.0.1:{PORT}")
    runner.terminate(proc)


def process_alive(pid: int) -> bool:
    """Is there a process with this pid that is not a zombie?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def install_app(name: str, template: str, execution_system: str = "demo-fork", **fields) -> Path:
    """Register a public app NAME-1.0 (as admin, straight into the registry) whose wrapper template is
    TEMPLATE, deployed on demo-storage; returns the storage root."""
    from airjobs import registry

    root = Path(registry.get_system("demo-storage")["storage"]["rootDir"])
    (root / f"apps/{name}-1.0").mkdir(parents=True, exist_ok=True)
    (root / f"apps/{name}-1.0/run.sh").write_text(template)
    registry.put_app(
        {
            "name": name,
            "version": "1.0",
            "executionSystem": execution_system,
            "executionType": "CLI",
            "parallelism": "SERIAL",
            "isPublic": True,
            "deploymentSystem": "demo-storage",
            "deploymentPath": f"/apps/{name}-1.0",
            "templatePath": "run.sh",
            **fields,
        },
        "admin",
    )
    return root


@pytest.fixture(autouse=True)
def _no_active_jobs_left_behind(request):
    """Unit tests create jobs straight in the database, without a lifecycle run. Left active, the service the
    end-to-end tests start later in the session would take them for jobs whose run it lost and resume them
    (``airjobs_airflow.reconcile``): each unit test's leftovers are stopped here."""
    yield
    if "pg" not in request.fixturenames or "service" in request.fixturenames:
        return
    from sqlalchemy import update

    from airjobs import db, statuses
    from airjobs.models import Job

    with db.transaction() as s:
        s.execute(
            update(Job)
            .where(Job.status.in_(statuses.values(statuses.ACTIVE)))
            .values(status="STOPPED", message="Left active by a unit test; stopped by the test harness.")
        )


def pytest_collection_modifyitems(session, config, items):
    """The fault tests (marker ``faults``) kill and restart parts of the session's service and of the test hosts:
    they run after all the others, so a test never meets a service in the middle of a restart. The fuzz test
    (marker ``fuzz``) runs just before them: whatever it leaves behind of its own user meets no later test but
    those, and a fault test's restart does not cut its run."""

    def rank(item: pytest.Item) -> int:
        return 2 if item.get_closest_marker("faults") else 1 if item.get_closest_marker("fuzz") else 0

    items.sort(key=rank)  # a stable sort keeps the rest in order


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0 and not os.environ.get("AIRJOBS_TEST_VAR"):
        shutil.rmtree(VAR, ignore_errors=True)


def read_infra() -> dict[str, str]:
    """The test hosts' settings (.ci/infra-up.sh writes infra.env; `make test` as root names it in
    AIRJOBS_INFRA_ENV); skips the test without them."""
    path = os.environ.get("AIRJOBS_INFRA_ENV", "")
    if not path or not Path(path).exists():
        pytest.skip("no test hosts (run `make test` as root, or set AIRJOBS_INFRA_ENV)")
    env = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.strip().startswith("#"):
            env[key.strip()] = value.strip().strip("'\"")
    return env


def ssh_connection(service: Service, conn_id: str) -> dict[str, str]:
    """An Airflow Connection (made through Airflow's own REST API) to the loopback OpenSSH test host."""
    infra = read_infra()
    headers = {"Authorization": f"Bearer {service.airflow_token()}"}
    conn = {
        "connection_id": conn_id,
        "conn_type": "ssh",
        "host": infra["AIRJOBS_SSH_HOST"],
        "port": int(infra["AIRJOBS_SSH_PORT"]),
        "login": infra["AIRJOBS_SSH_USER"],
        "extra": '{{"key_file": "{}", "no_host_key_check": true}}'.format(infra["AIRJOBS_SSH_KEY"]),
    }
    r = httpx.post(f"{service.base}/api/v2/connections", json=conn, headers=headers)
    assert r.status_code in (201, 409), r.text
    return infra


PROBE_TEMPLATE = """\
for f in ${textFile}; do wc -w < "$f" | tr -d ' ' > "$(basename "$f").words"; done
echo "on $(hostname) as SLURM job $SLURM_JOB_ID" > where.txt
gate=${gate}
if [ -n "$gate" ]; then while [ ! -e "$HOME/gates/$gate" ]; do sleep 1; done; fi
secs=${seconds}
code=${exitCode}
sleep "${secs:-0}"
exit "${code:-0}"
"""


def install_probe_app(name: str, system_id: str, queue: str) -> str:
    """A public app NAME-1.0 on SYSTEM_ID: counts the words of its inputs (``textFile``, up to 4), optionally
    waits for ``$HOME/gates/<gate>``, sleeps ``seconds``, exits ``exitCode``."""
    from airjobs import registry

    root = Path(registry.get_system("demo-storage")["storage"]["rootDir"])
    (root / f"apps/{name}-1.0").mkdir(parents=True, exist_ok=True)
    (root / f"apps/{name}-1.0/probe.sh").write_text(PROBE_TEMPLATE)
    registry.put_app(
        {
            "name": name,
            "version": "1.0",
            "executionSystem": system_id,
            "executionType": "HPC",
            "parallelism": "SERIAL",
            "isPublic": True,
            "deploymentSystem": "demo-storage",
            "deploymentPath": f"/apps/{name}-1.0",
            "templatePath": "probe.sh",
            "defaultQueue": queue,
            "defaultMaxRunTime": "00:30:00",
            "inputs": [{"id": "textFile", "value": {"required": False}, "semantics": {"maxCardinality": 4}}],
            "parameters": [
                {
                    "id": "seconds",
                    "value": {"type": "number", "default": 0, "required": False, "validator": "^[0-9]{1,3}$"},
                },
                {
                    "id": "exitCode",
                    "value": {"type": "number", "default": 0, "required": False, "validator": "^[0-9]{1,3}$"},
                },
                {
                    "id": "gate",
                    "value": {"type": "string", "default": "", "required": False, "validator": "^[a-z0-9-]{0,40}$"},
                },
            ],
        },
        "admin",
    )
    return f"{name}-1.0"
