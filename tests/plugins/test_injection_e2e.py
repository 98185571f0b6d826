"""An injection corpus through the real FORK path: every value is refused with a 400 or reaches the app
literally, and the marker file any escape would create never appears."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from airjobs import registry, store

pytestmark = pytest.mark.e2e

TEMPLATE = """\
printf '%s' ${msg} > msg-unquoted.bin
printf '%s' "${msg}" > msg-quoted.bin
printf '%s' ${file} > file-name.bin
cat -- ${file} > file-content.txt
"""


@pytest.fixture(scope="module")
def echo_app(service):
    from conftest import VAR, install_app

    root = install_app(
        "echo",
        TEMPLATE,
        inputs=[{"id": "file", "value": {"required": True}}],
        parameters=[{"id": "msg", "value": {"type": "string", "required": False}}],
    )
    (root / "alice/corpus").mkdir(parents=True, exist_ok=True)  # alice reads only her own home
    marker = VAR / "pwned"
    return root, marker


def corpus(marker: Path) -> list[str]:
    m = str(marker)
    return [
        f"$(touch {m})",
        f"`touch {m}`",
        f"; touch {m}",
        f"&& touch {m}",
        f"| touch {m}",
        f"a\ntouch {m}\n",
        f"'; touch {m}; '",
        f'"; touch {m}; "',
        "*",
        "/*",
        "?",
        "${IFS}",
        "$HOME",
        "~",
        "-n",
        "--",
        "\\",
        f"$'\\x41' $((1+1)) {{a,b}} >{m}",
        "x" * 20000,
        "ünïcødé ✓",
        "  leading and trailing  ",
    ]


def _submit(c: httpx.Client, **body) -> httpx.Response:
    return c.post("/jobs/v2", json={"name": "inject", "appId": "echo-1.0", "archive": True, **body})


def _archive(job: dict) -> Path:
    storage = registry.get_system("demo-storage")
    return Path(storage["storage"]["rootDir"]) / job["archivePath"]


def _wait(ids: list[str], timeout: float = 300) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = store.jobs_by_ids(ids)
        if all(j.status in ("FINISHED", "FAILED", "STOPPED", "KILLED") for j in jobs):
            return {j.id: j for j in jobs}
        time.sleep(0.5)
    raise AssertionError("jobs did not finish")


def test_parameter_values_reach_the_app_literally(service, echo_app):
    root, marker = echo_app
    (root / "alice/corpus/plain.txt").write_text("plain content\n")
    values = corpus(marker)
    with service.client("alice") as c:
        ids = []
        for v in values:
            r = _submit(c, inputs={"file": "agave://demo-storage/alice/corpus/plain.txt"}, parameters={"msg": [v]})
            assert r.status_code == 201, (v, r.text)
            ids.append(r.json()["result"]["id"])
        jobs = _wait(ids)
        for job_id, v in zip(ids, values, strict=False):
            job = c.get(f"/jobs/v2/{job_id}").json()["result"]
            assert jobs[job_id].status == "FINISHED", (v, job.get("message"))
            out = _archive(job)
            assert (out / "msg-quoted.bin").read_bytes() == v.encode(), v
            assert (out / "msg-unquoted.bin").read_bytes() == v.encode(), v
    assert not marker.exists()


def test_input_names_reach_the_app_literally(service, echo_app):
    root, marker = echo_app
    m = marker.name
    names = [
        f"a;touch {m}.txt",
        f"$(touch {m}).txt",
        f"`touch {m}`.txt",
        "sp ace.txt",
        "quo'te\".txt",
        "star*.txt",
        "dollar$IFS.txt",
        "-dash.txt",
    ]
    with service.client("alice") as c:
        ids = []
        for name in names:
            (root / "alice/corpus" / name).write_text(f"content of {name}\n")
            r = _submit(c, inputs={"file": [f"agave://demo-storage/alice/corpus/{name}"]})
            assert r.status_code == 201, (name, r.text)
            ids.append(r.json()["result"]["id"])
        jobs = _wait(ids)
        for job_id, name in zip(ids, names, strict=False):
            job = c.get(f"/jobs/v2/{job_id}").json()["result"]
            assert jobs[job_id].status == "FINISHED", (name, job.get("message"))
            out = _archive(job)
            assert (out / "file-name.bin").read_text() == name
            assert (out / "file-content.txt").read_text() == f"content of {name}\n"
    assert not marker.exists() and not (root / "alice/corpus" / m).exists()


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"parameters": {"msg": "nul\x00byte"}}, "NUL"),
        ({"parameters": {"msg": "x" * 70000}}, "at most"),
        ({"inputs": {"file": "agave://demo-storage/../../../etc/passwd"}}, "may not contain '..'"),
        ({"inputs": {"file": "../outside.txt"}}, "may not contain '..'"),
        ({"name": "bad\x00name"}, "NUL"),
    ],
)
def test_unsafe_values_are_refused(service, echo_app, body, fragment):
    before = store.count_jobs()
    payload = {"inputs": {"file": "agave://demo-storage/alice/corpus/plain.txt"}, **body}
    with service.client("alice") as c:
        r = _submit(c, **payload)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["message"]
    assert store.count_jobs() == before


def test_non_utf8_text_is_refused(service, echo_app):
    raw = (
        b'{"name": "x", "appId": "echo-1.0", "inputs": {"file": "alice/corpus/plain.txt"}, '
        b'"parameters": {"msg": "\\udcff"}}'
    )
    with service.client("alice") as c:
        r = c.post("/jobs/v2", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "UTF-8" in r.json()["message"]
        r = c.post(
            "/jobs/v2",
            content=b'{"name": "\xff\xfe", "appId": "echo-1.0"}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400 and "malformed JSON" in r.json()["message"]
