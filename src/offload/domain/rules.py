"""Pure rules: dependency conditions, ``$ref`` inputs, DAG checks, retry decisions, aging.

Both storage backends call these inside their transactions, so each rule exists once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from offload.domain.errors import DependencyError, InvalidInput, TooLarge
from offload.domain.models import (
    MAX_CHECKPOINT_BYTES,
    BackoffKind,
    Condition,
    DependencyOn,
    RetryPolicy,
    strict_json,
)
from offload.domain.status import Status

_MISSING = object()

# ---------------------------------------------------------------------------
# paths and conditions


def get_path(data: Any, path: str) -> Any:
    """Follow a dot path (``a.b.0.c``) into JSON; returns a sentinel-free ``None`` if absent."""
    value = lookup_path(data, path)
    return None if value is _MISSING else value


def lookup_path(data: Any, path: str) -> Any:
    """Like :func:`get_path` but returns the module's ``_MISSING`` sentinel when absent."""
    if path in ("", "."):
        return data
    cur = data
    for part in path.split("."):
        if isinstance(cur, Mapping):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        elif isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError):
                return _MISSING
        else:
            return _MISSING
    return cur


def evaluate_condition(cond: Condition, result: Any) -> bool:
    """Evaluate ``when`` over an upstream result. Type mismatches are simply false; no eval."""
    actual = lookup_path(result, cond.path)
    if cond.op == "exists":
        present = actual is not _MISSING and actual is not None
        return present if cond.value in (None, True) else not present
    if actual is _MISSING:
        return False
    v = cond.value
    try:
        match cond.op:
            case "==":
                return bool(actual == v)
            case "!=":
                return bool(actual != v)
            case ">":
                return bool(actual > v)
            case ">=":
                return bool(actual >= v)
            case "<":
                return bool(actual < v)
            case "<=":
                return bool(actual <= v)
            case "in":
                return isinstance(v, list | str | dict) and actual in v
            case "contains":
                return isinstance(actual, list | str | dict) and v in actual
    except TypeError:
        return False
    return False


class EdgeState(Enum):
    """What an upstream outcome means for one dependency edge."""

    WAIT = "wait"
    SATISFIED = "satisfied"
    IMPOSSIBLE = "impossible"


def edge_state(
    on: DependencyOn, when: Condition | None, upstream: Status, result: Any
) -> EdgeState:
    """Decide a dependency edge from its upstream's status (and result for ``when``)."""
    if upstream not in (Status.COMPLETED, Status.FAILED, Status.CANCELLED):
        return EdgeState.WAIT
    if on is DependencyOn.COMPLETED and upstream is not Status.COMPLETED:
        return EdgeState.IMPOSSIBLE
    if on is DependencyOn.FAILED and upstream is Status.COMPLETED:
        return EdgeState.IMPOSSIBLE
    if when is not None and not evaluate_condition(when, result):
        return EdgeState.IMPOSSIBLE
    return EdgeState.SATISFIED


# ---------------------------------------------------------------------------
# $ref inputs


def find_refs(value: Any) -> set[str]:
    """Names of the siblings a workflow input references through ``{"$ref": "name.result…"}``."""
    out: set[str] = set()
    if isinstance(value, dict):
        if set(value) == {"$ref"} and isinstance(value["$ref"], str):
            out.add(value["$ref"].split(".", 1)[0])
        else:
            for v in value.values():
                out |= find_refs(v)
    elif isinstance(value, list):
        for v in value:
            out |= find_refs(v)
    return out


def resolve_refs(value: Any, upstream: Callable[[str], Any]) -> Any:
    """Replace ``{"$ref": "a.result.path"}`` with the value from upstream ``a``'s record.

    ``upstream(name)`` returns ``{"result": …, "status": …}`` for a sibling; the path after
    the name is followed from there, so ``a.result.total`` and ``a.status`` both work.
    """
    if isinstance(value, dict):
        if set(value) == {"$ref"} and isinstance(value["$ref"], str):
            name, _, rest = value["$ref"].partition(".")
            return get_path(upstream(name), rest)
        return {k: resolve_refs(v, upstream) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_refs(v, upstream) for v in value]
    return value


# ---------------------------------------------------------------------------
# DAG validation


def check_acyclic(edges: Mapping[str, Iterable[str]], label: Callable[[str], str] = str) -> None:
    """Raise :class:`DependencyError` naming a cycle if ``edges`` (node -> deps) has one."""
    state: dict[str, int] = {}  # 1 = on stack, 2 = done
    for start in edges:
        if state.get(start):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(edges.get(start, ())))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            if nxt == node:
                raise DependencyError(
                    f"task {label(node)} depends on itself", details={"cycle": [label(node)]}
                )
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                names = " -> ".join(label(n) for n in cycle)
                raise DependencyError(
                    f"dependency cycle: {names}", details={"cycle": [label(n) for n in cycle]}
                )
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(edges.get(nxt, ()))))


# ---------------------------------------------------------------------------
# retries


class Outcome(Enum):
    """What happens to a task after a failed attempt."""

    RETRY = "retry"  # back to queued now, or scheduled at ``run_at``
    DEAD = "dead"  # failed for good (dead-letter queue)


@dataclass(frozen=True, slots=True)
class Decision:
    """The one decision about a failed attempt."""

    outcome: Outcome
    delay_s: float = 0.0
    reason: str = ""


#: The longest any retry waits: times stay within what every platform's clock can show,
#: so no stored task can carry a run_at that cannot be read back.
MAX_DELAY_S = 366 * 86400.0


def backoff_delay(
    policy: RetryPolicy, attempt: int, rng: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    Exponential uses full jitter (a uniform draw in ``[0, min(cap, base·factor^(n-1))]``),
    which spreads a thundering herd best; fixed waits ``base`` (jittered ±50% when on).
    """
    if policy.backoff is BackoffKind.NONE:
        return 0.0
    if policy.backoff is BackoffKind.FIXED:
        delay = policy.base_s
        return min(delay * (0.5 + rng()) if policy.jitter else delay, MAX_DELAY_S)
    try:
        grown = policy.base_s * policy.factor ** max(attempt - 1, 0)
    except OverflowError:  # many attempts with a large factor: the cap applies
        grown = math.inf
    ceiling = min(policy.cap_s, grown, MAX_DELAY_S)
    return ceiling * rng() if policy.jitter else ceiling


def decide_failure(
    *,
    attempt: int,
    max_retries: int,
    policy: RetryPolicy,
    retryable: bool,
    now: float,
    deadline: float | None,
    requested_delay_s: float | None = None,
    rng: Callable[[], float] = random.random,
) -> Decision:
    """Decide retry or dead-letter after attempt number ``attempt`` failed.

    ``max_retries`` counts retries, so a task runs at most ``max_retries + 1`` times.
    """
    if not retryable:
        return Decision(Outcome.DEAD, reason="non-retryable error")
    if attempt > max_retries:
        return Decision(Outcome.DEAD, reason=f"no retries left ({max_retries} allowed)")
    delay = (
        min(requested_delay_s, MAX_DELAY_S)
        if requested_delay_s is not None
        else backoff_delay(policy, attempt, rng)
    )
    if deadline is not None and now + delay >= deadline:
        return Decision(Outcome.DEAD, reason="deadline would pass before the next attempt")
    return Decision(Outcome.RETRY, delay_s=max(delay, 0.0))


# ---------------------------------------------------------------------------
# priority aging

DEFAULT_AGING_INTERVAL_S = 60.0


def sort_key(ready_at: float, priority: int, aging_interval_s: float) -> float:
    """The stored claim-order key: ``ready_at − priority × aging_interval``.

    Ascending order by this key ranks exactly as "priority, plus one per aging interval
    waited" does, so claims use one index and nothing is recomputed at claim time.
    """
    return ready_at - priority * aging_interval_s


def effective_priority(
    priority: int, waited_s: float, aging_interval_s: float = DEFAULT_AGING_INTERVAL_S
) -> int:
    """Priority plus one per aging interval waited, capped at 10 (for display)."""
    if aging_interval_s <= 0:
        return priority
    return min(10, priority + int(max(waited_s, 0) // aging_interval_s))


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON; 0 for a value JSON has no form for (refused elsewhere,
    with its own message)."""
    if value is None or isinstance(value, bool | int | float):
        return 24  # at most, for any of these
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return 0


def check_kept(value: Any, field: str, what: str, hint: str = "") -> None:
    """Refuse (:class:`TooLarge`) checkpoint data or inline artifact content over
    :data:`MAX_CHECKPOINT_BYTES` of JSON: a task keeps them all and every read returns
    them. ``what`` starts the message ("checkpoint data is"), ``hint`` ends it."""
    size = json_size(value)
    if size > MAX_CHECKPOINT_BYTES:
        raise TooLarge(
            f"{what} {size:,} bytes of JSON; the limit is {MAX_CHECKPOINT_BYTES:,}{hint}",
            details={"field": field, "size": size, "limit": MAX_CHECKPOINT_BYTES},
        )


def result_too_large(size: int, limit: int) -> str:
    """What to say of a result over the limit, with the ways out."""
    return (
        f"the result is {size:,} bytes of JSON; the limit is {limit:,} "
        "(OFFLOAD_MAX_RESULT_BYTES): return less, or store bulky output as an artifact"
    )


def validate_json_size(value: Any, limit_bytes: int, field: str) -> bytes:
    """Refuse JSON values bigger than ``limit_bytes`` once serialised; returns the JSON."""
    try:
        text = strict_json(value)
    except TypeError as exc:
        raise InvalidInput(f"{field} is not JSON-serialisable: {exc}", field=field) from None
    except ValueError as exc:
        raise InvalidInput(f"{field} {exc}; send null or a string", field=field) from None
    size = len(text)
    if size > limit_bytes:
        raise TooLarge(
            f"{field} is {size} bytes; the limit is {limit_bytes}",
            details={"field": field, "size": size, "limit": limit_bytes},
        )
    return text
