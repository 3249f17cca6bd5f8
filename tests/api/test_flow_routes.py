"""Limits, resources, queues, cache and schedules over real HTTP: shapes and 4xx."""

from __future__ import annotations

from pathlib import Path

from .conftest import running_server


def test_flow_control_routes(tmp_path: Path) -> None:
    with running_server(tmp_path, auth=False) as live, live.http() as http:
        r = http.put("/v1/limits/util.echo", json={"concurrency": 2, "rate_limit": "10/s"})
        assert r.status_code == 200 and r.json()["rate_limit"] == "10/s"
        assert http.get("/v1/limits").json()["limits"][0]["type"] == "util.echo"
        bad = http.put("/v1/limits/util.echo", json={"rate_limit": "lots"})
        assert bad.status_code == 422 and "COUNT/PERIOD" in bad.json()["error"]["message"]
        assert http.put("/v1/limits/nope.x", json={"concurrency": 1}).status_code in (404, 422)
        assert http.delete("/v1/limits/util.echo").status_code == 204
        assert http.delete("/v1/limits/util.echo").status_code == 404

        assert http.put("/v1/resources/gpu", json={"capacity": 1}).status_code == 200
        assert http.put("/v1/resources/gpu", json={"capacity": -1}).status_code == 422
        task = http.post("/v1/tasks", json={"type": "util.echo", "resources": {"gpu": 1}})
        assert task.status_code == 201 and task.json()["resources"] == {"gpu": 1}
        unknown = http.post("/v1/tasks", json={"type": "util.echo", "resources": {"tpu": 1}})
        assert unknown.status_code == 422 and "tpu" in unknown.json()["error"]["message"]
        (gpu,) = http.get("/v1/resources").json()["resources"]
        assert gpu["waiting"] == 1
        assert http.delete("/v1/resources/gpu").status_code == 409

        q = http.put("/v1/queues/default", json={"fairness": "owner"})
        assert (
            q.status_code == 200
            and http.get("/v1/queues").json()["queues"][0]["fairness"] == "owner"
        )
        assert http.put("/v1/queues/default", json={"fairness": "random"}).status_code == 422

        metrics = http.get("/metrics").text
        assert "offload_tasks_limited_queued 1.0" in metrics
        assert 'offload_resource_capacity{resource="gpu"} 1.0' in metrics
        assert 'offload_resource_units_in_use{resource="gpu"} 0.0' in metrics

        assert http.delete("/v1/cache", params={"type": "util.echo"}).json() == {"removed": 0}
        assert http.get("/v1/cache").json() == {"entries": {}}


def test_schedule_routes(tmp_path: Path) -> None:
    with running_server(tmp_path, auth=False) as live, live.http() as http:
        body = {"name": "tick", "every_s": 60, "task": {"type": "util.echo", "input": {"a": 1}}}
        made = http.post("/v1/schedules", json=body)
        assert made.status_code == 201
        sid = made.json()["id"]
        assert http.post("/v1/schedules", json=body).status_code == 409
        assert http.get("/v1/schedules/tick").json()["id"] == sid
        assert http.post(f"/v1/schedules/{sid}/pause").json()["paused"] is True
        assert http.post("/v1/schedules/tick/resume").json()["paused"] is False
        bad = http.post("/v1/schedules", json={**body, "name": "x", "cron": "* * *"})
        assert bad.status_code == 422
        tz = {**body, "name": "y", "every_s": None, "cron": "* * * * *", "timezone": "Nowhere"}
        assert http.post("/v1/schedules", json=tz).status_code == 422
        typo = {**body, "name": "z", "task": {"type": "util.ech"}}
        assert http.post("/v1/schedules", json=typo).status_code in (404, 422)
        assert len(http.get("/v1/schedules").json()["schedules"]) == 1
        assert http.delete("/v1/schedules/tick").status_code == 200
        assert http.get("/v1/schedules/tick").status_code == 404
