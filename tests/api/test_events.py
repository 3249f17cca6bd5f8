"""The live event stream (``GET /v1/events``, Server-Sent Events) read by a real HTTP client:
live delivery, ``Last-Event-ID`` resume without gaps, filters and tenancy."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import LiveServer, running_server

pytestmark = pytest.mark.timeout(60)


class SseReader:
    """Reads an SSE stream on a thread; parsed events come out of :meth:`take`."""

    def __init__(self, live: LiveServer, token: str | None, params: Any = None,
                 last_event_id: str | None = None) -> None:  # fmt: skip
        headers = {"Authorization": f"Bearer {live.tokens[token]}"} if token else {}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self._client = httpx.Client(base_url=live.url, timeout=httpx.Timeout(30, read=None))
        self._stream = self._client.stream("GET", "/v1/events", params=params, headers=headers)
        self.response = self._stream.__enter__()
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.retry: str | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.response.status_code == 200:
            self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self.response.iter_lines():
                if not line:
                    if "data" in fields:
                        self.queue.put({"id": fields.get("id"), **json.loads(fields["data"])})
                    fields = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "retry":
                    self.retry = value
                fields[name] = value
        except Exception:  # closed by the test under the reader's feet
            return

    def take_until(self, done: Any, timeout: float = 15) -> list[dict[str, Any]]:
        """Events until ``done(events)`` holds."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not done(got):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"stream timed out; got {[(e['id'], e['kind']) for e in got]}")
            try:
                got.append(self.queue.get(timeout=remaining))
            except queue.Empty:
                continue
        return got

    def close(self) -> None:
        self.response.close()
        # The reading thread ends when the server closes its side (daemon meanwhile).
        self._client.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Auth on, with an embedded worker so tasks really run."""
    with running_server(
        tmp_path_factory.mktemp("events"), auth=True, worker_concurrency=4, worker_grace_s=2
    ) as server:
        yield server


def completed(*task_ids: str) -> Any:
    def check(events: list[dict[str, Any]]) -> bool:
        finished = {e["task_id"] for e in events if e["kind"] == "completed"}
        return set(task_ids) <= finished

    return check


def test_stream_delivers_live_events_in_order(live: LiveServer) -> None:
    reader = SseReader(live, "admin", {"type": "math.factorial"})
    try:
        assert reader.response.headers["content-type"].startswith("text/event-stream")
        with live.sdk("alice") as sdk:
            task = sdk.submit("math.factorial", {"n": 6})
        events = reader.take_until(completed(task.id))
        assert [e["kind"] for e in events] == ["created", "claimed", "completed"]
        assert all(e["task_id"] == task.id and e["task_type"] == "math.factorial" for e in events)
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids) and ids == [e["seq"] for e in events]
        assert reader.retry == "2000"
    finally:
        reader.close()


def test_last_event_id_resumes_without_gaps(live: LiveServer) -> None:
    kind = "util.echo"
    with live.sdk("alice") as sdk:
        first = SseReader(live, "alice", {"type": kind})
        try:
            a = sdk.submit(kind, {"n": "a"})
            seen = first.take_until(completed(a.id))
        finally:
            first.close()
        last = seen[-1]["id"]
        # Disconnected: these events happen while nobody listens.
        b = sdk.submit(kind, {"n": "b"})
        c = sdk.submit(kind, {"n": "c"})
        for t in (b, c):
            sdk.wait(t.id, timeout=15)
        second = SseReader(live, "alice", {"type": kind}, last_event_id=last)
        try:
            resumed = second.take_until(completed(b.id, c.id))
        finally:
            second.close()
        expected = sorted(
            (e for t in (a, b, c) for e in sdk.events(t.id) if e.seq > int(last)),
            key=lambda e: e.seq,
        )
    assert [int(e["id"]) for e in resumed] == [e.seq for e in expected]
    assert [e["kind"] for e in resumed] == [e.kind for e in expected]


def test_after_replays_history_and_timeout_closes_the_stream(live: LiveServer) -> None:
    with live.sdk("alice") as sdk:
        task = sdk.submit("util.echo", {"x": 1})
        sdk.wait(task.id, timeout=15)
        history = [e.seq for e in sdk.events(task.id)]
    headers = {"Authorization": f"Bearer {live.tokens['alice']}"}
    params = {"task_id": task.id, "after": 0, "timeout": 0.5, "status": "done"}
    start = time.monotonic()
    r = httpx.get(live.url + "/v1/events", params=params, headers=headers, timeout=10)
    assert r.status_code == 200 and time.monotonic() - start < 5
    ids = [int(line[3:].strip()) for line in r.text.splitlines() if line.startswith("id:")]
    assert ids == history


def test_stream_is_scoped_to_the_tenant(live: LiveServer) -> None:
    alice = SseReader(live, "alice", {"type": "util.sleep"})
    try:
        with live.sdk("bob") as bob_sdk, live.sdk("alice") as alice_sdk:
            theirs = bob_sdk.submit("util.sleep", {"seconds": 0})
            mine = alice_sdk.submit("util.sleep", {"seconds": 0})
            events = alice.take_until(completed(mine.id))
            bob_sdk.wait(theirs.id, timeout=15)
        assert {e["task_id"] for e in events} == {mine.id}
    finally:
        alice.close()
    assert alice.queue.empty() or all(e["task_id"] != theirs.id for e in list(alice.queue.queue))
    forbidden = SseReader(live, "alice", {"owner": "bob"})
    assert forbidden.response.status_code == 403
    forbidden.close()
    bad = SseReader(live, "alice", {"status": "exploded"})
    assert bad.response.status_code == 422
    bad.close()
    anonymous = SseReader(live, None)
    assert anonymous.response.status_code == 401
    anonymous.close()


def test_sdk_watch_long_polls_over_http(live: LiveServer) -> None:
    with live.sdk("alice") as sdk:
        task = sdk.submit("util.sleep", {"seconds": 1.2}, queue="default")
        seen: list[str] = []
        after = 0
        deadline = time.monotonic() + 15
        while "completed" not in seen and time.monotonic() < deadline:
            for event in sdk.watch(task.id, after=after, timeout=5):
                seen.append(event.kind)
                after = event.seq
        assert seen[0] == "created" and "progress" in seen and seen[-1] == "completed"
