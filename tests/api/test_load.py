"""Load: 50 concurrent clients submit for 10 s against ``offload serve`` (a subprocess,
auth on, a token per client); every acknowledged task is in the database afterwards.
Prints the submit latency p50/p99 it measured."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Processes, clean_env
from tests.api.test_serve import token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

CLIENTS = 50
DURATION_S = 10.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(1, math.ceil(q / 100 * len(s))) - 1]


async def run_load(url: str, tokens: list[str], tag: str) -> dict[str, Any]:
    acked: list[str] = []
    latencies: list[float] = []
    failures: list[str] = []
    stop_at = time.monotonic() + DURATION_S

    async def one_client(n: int, secret: str) -> None:
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            k = 0
            while time.monotonic() < stop_at:
                body = {"type": "util.echo", "input": {"client": n, "k": k}, "tags": [tag]}
                start = time.perf_counter()
                try:
                    r = await http.post("/v1/tasks", json=body)
                except httpx.HTTPError as exc:
                    failures.append(f"client {n}: {exc!r}")
                    continue
                latencies.append(time.perf_counter() - start)
                if r.status_code == 201:
                    acked.append(r.json()["id"])
                else:
                    failures.append(f"client {n}: {r.status_code} {r.text[:200]}")
                k += 1

    started = time.monotonic()
    await asyncio.gather(*(one_client(n, tokens[n]) for n in range(CLIENTS)))
    elapsed = time.monotonic() - started
    return {"acked": acked, "latencies": latencies, "failures": failures, "elapsed": elapsed}


def test_fifty_clients_every_acknowledged_submit_is_stored(
    tmp_path: Path, procs: Processes, capsys: pytest.CaptureFixture[str]
) -> None:
    env = clean_env(tmp_path)
    admin = token(env, "ops", "admin")
    _, url = procs.serve(env, "--auth", "--no-worker", "--log-level", "warning")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}) as http:
        tokens = [
            http.post("/v1/tokens", json={"user": f"user{n % 5}", "name": f"load-{n}"}).json()[
                "token"
            ]
            for n in range(CLIENTS)
        ]
        tag = f"load-{uuid.uuid4().hex[:8]}"
        result = asyncio.run(run_load(url, tokens, tag))
        acked = result["acked"]
        assert not result["failures"], result["failures"][:5]
        assert len(acked) == len(set(acked)) > CLIENTS * 10

        stored: set[str] = set()
        offset = 0
        while True:
            page = http.get("/v1/tasks", params={"tag": tag, "limit": 1000, "offset": offset})
            body = page.json()
            stored |= {t["id"] for t in body["tasks"]}
            offset += 1000
            if offset >= body["total"]:
                break
        assert body["total"] == len(acked)
        assert stored == set(acked)

    lat = result["latencies"]
    with capsys.disabled():
        print(
            f"\n[load] {CLIENTS} clients × {DURATION_S:g}s: {len(acked)} submits acknowledged "
            f"and stored ({len(acked) / result['elapsed']:.0f}/s); submit latency "
            f"p50 {pct(lat, 50) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms"
        )
