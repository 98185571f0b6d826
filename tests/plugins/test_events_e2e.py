"""Live job events over Server-Sent Events (issue 13, part 5), against the real service: a job's stream shows
PENDING ... FINISHED as it happens (lag < 1 s from the event's own time), ends after the terminal status, resumes
after a disconnect with Last-Event-ID without a gap or a repeat, answers 204 once there is nothing more; other
users get 404 and see nothing of it in their all-jobs stream; 100 idle streams cost the api-server < 5% of a
core."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from conftest import VAR

pytestmark = pytest.mark.e2e

DEMO = json.loads((Path(__file__).resolve().parents[2] / "include/examples/demo-job.json").read_text())


def _events(lines, stop_after: int | None = None) -> list[tuple[dict, float]]:
    """(data, receipt time) of each event of an SSE stream, until it ends (or ``stop_after`` events)."""
    out: list[tuple[dict, float]] = []
    ident = None
    for line in lines:
        if line.startswith("id: "):
            ident = int(line[4:])
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["id"] == ident
            out.append((data, time.time()))
            if stop_after is not None and len(out) >= stop_after:
                break
    return out


def _submit(service, user: str = "alice") -> str:
    with service.client(user) as c:
        r = c.post("/jobs/v2", json=DEMO)
        assert r.status_code == 201, r.text
        return r.json()["result"]["id"]


def test_a_job_stream_shows_every_event_live_and_ends_after_the_terminal_status(service):
    job_id = _submit(service)
    with service.client("alice") as c, c.stream("GET", f"/jobs/v2/{job_id}/events", timeout=180) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        got = _events(r.iter_lines())
    history = service.history(job_id, user="alice")
    assert [d["status"] for d, _ in got] == [e["status"] for e in history]
    assert got[0][0]["status"] == "PENDING" and got[-1][0]["status"] == "FINISHED"
    assert all(d["jobId"] == job_id for d, _ in got)
    ids = [d["id"] for d, _ in got]
    assert ids == sorted(set(ids))
    # live: each event after the connection was open arrived within a second of its own time
    connected = got[0][1]
    lags = [at - datetime.fromisoformat(d["created"]).timestamp() for d, at in got if at > connected + 0.05]
    assert lags and max(lags) < 1.0, lags
    with service.client("alice") as c:  # nothing more after the end: 204, EventSource stops reconnecting
        r = c.get(f"/jobs/v2/{job_id}/events", headers={"Last-Event-ID": str(ids[-1])})
        assert r.status_code == 204


def test_a_stream_resumes_after_a_disconnect_without_a_gap_or_a_repeat(service):
    job_id = _submit(service)
    with service.client("alice") as c:
        with c.stream("GET", f"/jobs/v2/{job_id}/events", timeout=180) as r:
            first = _events(r.iter_lines(), stop_after=3)
        time.sleep(1.5)  # events happen while no one listens
        last = first[-1][0]["id"]
        with c.stream("GET", f"/jobs/v2/{job_id}/events", headers={"Last-Event-ID": str(last)}, timeout=180) as r:
            rest = _events(r.iter_lines())
        with c.stream("GET", f"/jobs/v2/{job_id}/events", params={"lastEventId": first[0][0]["id"]}) as r:
            by_query = _events(r.iter_lines())
    history = [e["status"] for e in service.history(job_id, user="alice")]
    seen = [d for d, _ in first + rest]
    assert [d["status"] for d in seen] == history
    assert len({d["id"] for d in seen}) == len(seen)
    assert [d["id"] for d, _ in by_query] == [d["id"] for d in seen[1:]]
    with service.client("alice") as c:
        assert c.get(f"/jobs/v2/{job_id}/events", headers={"Last-Event-ID": "x"}).status_code == 400


def test_other_users_see_nothing_of_a_job_stream(service):
    async def watch(user: str, seconds: float) -> list[dict]:
        got: list[dict] = []
        headers = {"Authorization": f"Bearer {service.token(user)}"}
        async with httpx.AsyncClient(base_url=service.base, headers=headers, timeout=60) as c:
            try:
                async with asyncio.timeout(seconds):
                    async with c.stream("GET", "/jobs/v2/events") as r:
                        assert r.status_code == 200
                        async for line in r.aiter_lines():
                            if line.startswith("data: "):
                                got.append(json.loads(line[6:]))
            except TimeoutError:
                pass
        return got

    async def scenario() -> tuple[list[dict], list[dict], str]:
        alice_watch = asyncio.create_task(watch("alice", 25))
        bob_watch = asyncio.create_task(watch("bob", 25))
        await asyncio.sleep(1.0)
        job_id = await asyncio.to_thread(_submit, service)
        await asyncio.to_thread(service.wait_terminal, job_id, "alice", 20)
        return await alice_watch, await bob_watch, job_id

    alice, bob, job_id = asyncio.run(scenario())
    assert "FINISHED" in [d["status"] for d in alice if d["jobId"] == job_id]
    assert job_id not in {d["jobId"] for d in bob}
    with service.client("bob") as c:
        assert c.get(f"/jobs/v2/{job_id}/events").status_code == 404
    with service.client(None) as c:
        assert c.get(f"/jobs/v2/{job_id}/events").status_code == 401
        assert c.get("/jobs/v2/events").status_code == 401


def _api_server_pids() -> list[int]:
    """The test service's api-server (its supervisor's pid file) and its children (uvicorn workers)."""
    root = int((VAR / "run" / "api-server.pid").read_text())
    pids, parents = [root], {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    grew = True
    while grew:
        more = [pid for pid, ppid in parents.items() if ppid in pids and pid not in pids]
        pids += more
        grew = bool(more)
    return pids


def _cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def test_a_hundred_idle_streams_cost_under_five_percent_of_a_core(service):
    pids = _api_server_pids()
    assert pids, "the api-server's processes"

    async def scenario() -> tuple[float, float, int]:
        base_before = _cpu_seconds(pids)
        await asyncio.sleep(10.0)
        baseline = (_cpu_seconds(pids) - base_before) / 10.0  # the reconciler's sweeps and the like
        headers = {"Authorization": f"Bearer {service.token('carol')}"}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=service.base, headers=headers, timeout=60, limits=limits) as c:
            opened = asyncio.Event()
            count = 0

            async def idle() -> None:
                nonlocal count
                async with c.stream("GET", "/jobs/v2/events") as r:
                    assert r.status_code == 200
                    count += 1
                    if count == 100:
                        opened.set()
                    async for _ in r.aiter_lines():
                        pass

            tasks = [asyncio.create_task(idle()) for _ in range(100)]
            await asyncio.wait_for(opened.wait(), 60)
            await asyncio.sleep(2.0)  # the connections settle
            before = _cpu_seconds(pids)
            await asyncio.sleep(20.0)
            used = _cpu_seconds(pids) - before
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return baseline, used / 20.0, count

    baseline, share, count = asyncio.run(scenario())
    assert count == 100
    print(
        f"\n---- 100 idle event streams: api-server CPU {share * 100:.2f}% of one core ({baseline * 100:.2f}% without)"
    )
    assert share - baseline < 0.05, (share, baseline)
