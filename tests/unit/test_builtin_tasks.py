"""The built-in task library, called through its task types against known answers."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from offload.core.registry import Registry, TaskType
from offload.domain.errors import Fatal, InvalidInput
from offload.domain.models import Artifact
from offload.tasks import agents, register_builtins, util


class FakeContext:
    """Just enough of TaskContext: records progress; cancels after ``cancel_after`` reports."""

    task: Any = None

    def __init__(self, cancel_after: int | None = None) -> None:
        self.cancel_after = cancel_after
        self.reports: list[tuple[float | None, str | None]] = []
        self.logs: list[str] = []

    @property
    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.reports) >= self.cancel_after

    @property
    def attempt(self) -> int:
        return 1

    def progress(self, percent: float | None = None, step: str | None = None) -> None:
        self.reports.append((percent, step))

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append(message)

    def checkpoint(self, name: str, data: Any = None) -> None:
        pass

    def artifact(self, artifact: Artifact) -> None:
        pass


@pytest.fixture(scope="module")
def registry() -> Registry:
    reg = Registry()
    register_builtins(reg)
    return reg


def run(task_type: TaskType, data: dict[str, Any], ctx: FakeContext | None = None) -> Any:
    """Validate like submit does, then call the handler like the worker does."""
    kwargs = task_type.call_kwargs(task_type.validate_input(data))
    if task_type.takes_context:
        kwargs["ctx"] = ctx if ctx is not None else FakeContext()
    assert task_type.handler is not None
    result = task_type.handler(**kwargs)
    return asyncio.run(result) if task_type.is_async else result


def call(
    registry: Registry, name: str, data: dict[str, Any], ctx: FakeContext | None = None
) -> Any:
    return run(registry.get(name), data, ctx)


def evaluate(registry: Registry, expression: str) -> dict[str, Any]:
    result: dict[str, Any] = call(registry, "math.evaluate", {"expression": expression})
    return result


# --- math.factorial ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 1),
        (1, 1),
        (10, 3628800),
        (18, 6402373705728000),  # the largest below 2**53: still a JSON number
        (19, "121645100408832000"),
        (30, "265252859812191058636308480000000"),
    ],
)
def test_factorial_known_answers(registry: Registry, n: int, expected: int | str) -> None:
    assert call(registry, "math.factorial", {"n": n}) == expected


def test_factorial_1000_matches_python(registry: Registry) -> None:
    assert call(registry, "math.factorial", {"n": 1000}) == str(math.factorial(1000))


def test_factorial_largest_allowed(registry: Registry) -> None:
    # 100000! has 456,574 digits: beyond str(int)'s 4,300-digit guard.
    value = call(registry, "math.factorial", {"n": 100_000})
    assert len(value) == 456_574
    assert value.startswith("28242294079603478742")
    assert value.endswith("0" * 24_999)  # trailing zeros: sum of 100000 // 5**k
    assert not value.endswith("0" * 25_000)


def test_factorial_missing_n_names_the_field(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.get("math.factorial").validate_input({})
    assert "input.n" in info.value.message
    assert info.value.field == "input.n"


@pytest.mark.parametrize("bad", [-1, 100_001, "ten", 2.5, True, None, [3]])
def test_factorial_refuses_bad_n(registry: Registry, bad: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.get("math.factorial").validate_input({"n": bad})
    assert "input.n" in info.value.message


def test_factorial_refuses_extra_field(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.get("math.factorial").validate_input({"n": 3, "m": 4})
    assert "input.m: unexpected field" in info.value.message


def test_factorial_schema_states_limits(registry: Registry) -> None:
    schema = registry.get("math.factorial").info().input_schema
    assert schema["properties"]["n"]["minimum"] == 0
    assert schema["properties"]["n"]["maximum"] == 100_000
    assert schema["required"] == ["n"]


# --- math.evaluate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value", "decimal"),
    [
        ("1/3 + 1/6", "1/2", "0.5"),
        ("0.1 + 0.2", "3/10", "0.3"),
        ("2**100", "1267650600228229401496703205376", "1.26765060022822940149670320538E+30"),
        ("(1+2)*3", "9", "9"),
        ("-2**2", "-4", "-4"),  # ** binds tighter than unary minus, as in Python
        ("(-2)**2", "4", "4"),
        ("2**3**2", "512", "512"),  # right-associative
        ("2**-2", "1/4", "0.25"),
        ("(2/3)**-3", "27/8", "3.375"),
        ("1/3", "1/3", "0.333333333333333333333333333333"),
        ("2/3", "2/3", "0.666666666666666666666666666667"),
        ("1e3 + 1.5e-1", "20003/20", "1000.15"),
        ("  7 -\t2 * -3  ", "13", "13"),
        ("1_000.5", "2001/2", "1000.5"),
        (".5 + 1.", "3/2", "1.5"),
        ("+-+1", "-1", "-1"),
        ("0**0", "1", "1"),
        ("10 - 4 - 3", "3", "3"),  # left-associative
        ("12 / 4 / 3", "1", "1"),
        ("2*(3)*(4)**(2)-(1)/(2)", "191/2", "95.5"),
    ],
)
def test_evaluate_known_answers(
    registry: Registry, expression: str, value: str, decimal: str
) -> None:
    result = evaluate(registry, expression)
    assert result == {"value": value, "decimal": decimal, "is_integer": "/" not in value}


def test_evaluate_long_flat_sum(registry: Registry) -> None:
    # Thousands of terms: deeper than Python's own ast builder accepts.
    assert evaluate(registry, "+".join(["1"] * 5000))["value"] == "5000"


def test_evaluate_result_past_str_digit_limit(registry: Registry) -> None:
    result = evaluate(registry, "10**9999 + 1")
    assert result["value"] == "1" + "0" * 9998 + "1"
    assert result["decimal"] == "1.00000000000000000000000000000E+9999"
    assert evaluate(registry, "1/10**9999")["value"] == "1/1" + "0" * 9999


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", "division by zero"),
        ("1/(3-3)", "division by zero"),
        ("0**-1", "division by zero"),
        ("__import__('os')", "name '__import__'"),
        ("__import__('os').system('true')", "not allowed"),
        ("x + 1", "name 'x'"),
        ("abs(-1)", "name 'abs'"),
        ("2**0.5", "only integer exponents"),
        ("2^3", "use ** for powers"),
        ("7 // 2", "'//'"),
        ("7 % 2", "'%'"),
        ("1 < 2", "'<'"),
        ("[1]", "'['"),
        ("'1'", '"\'"'),
        ("1j", "name 'j'"),
        ("1 +", "it ends where a number or '(' was expected"),
        ("(1 + 2", "')'"),
        ("1 2", "'2' at character 3"),
        ("()", "')' at character 2"),
        ("   ", "empty"),
        ("1e999999999", "more than 10,000 digits"),
        ("10**10000", "more than 10,000 digits"),
        ("(10**5000)*(10**5000)", "more than 10,000 digits"),
        ("1/10**10000", "more than 10,000 digits"),
        ("-" * 200 + "1", "more than 100 deep"),
        ("(" * 150 + "1" + ")" * 150, "more than 100 deep"),
    ],
)
def test_evaluate_refuses(registry: Registry, expression: str, message: str) -> None:
    with pytest.raises(Fatal) as info:
        evaluate(registry, expression)
    assert message in str(info.value)


@pytest.mark.parametrize("expression", ["9**9**9", "2**2**2**2**2", "7**(10**9999)"])
def test_evaluate_huge_power_fails_fast(registry: Registry, expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(Fatal, match="too large"):
        evaluate(registry, expression)
    assert time.perf_counter() - started < 1.0


def test_evaluate_trivial_base_allows_huge_exponent(registry: Registry) -> None:
    assert evaluate(registry, "(-1)**(10**9999 + 1)")["value"] == "-1"


def test_evaluate_input_limits(registry: Registry) -> None:
    task_type = registry.get("math.evaluate")
    with pytest.raises(InvalidInput, match=r"input\.expression"):
        task_type.validate_input({"expression": "1" + "+1" * 5000})
    with pytest.raises(InvalidInput, match=r"input\.expression"):
        task_type.validate_input({"expression": ""})
    with pytest.raises(InvalidInput, match=r"input\.expression"):
        task_type.validate_input({"expression": 12})


# --- util.echo -----------------------------------------------------------------------------


def test_echo_returns_input(registry: Registry) -> None:
    data = {"a": 1, "nested": {"list": [1, "two", None]}, "s": "x"}
    assert call(registry, "util.echo", data) == data
    assert call(registry, "util.echo", {}) == {}


def test_echo_schema_accepts_any_object(registry: Registry) -> None:
    schema = registry.get("util.echo").info().input_schema
    assert schema["type"] == "object"
    assert schema.get("additionalProperties", True) is True


# --- util.sleep ----------------------------------------------------------------------------


@pytest.fixture
def fast_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replace asyncio.sleep with a recorder that does not wait."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(util.asyncio, "sleep", fake_sleep)
    return slept


def test_sleep_reports_progress_each_second(registry: Registry, fast_sleep: list[float]) -> None:
    ctx = FakeContext()
    assert call(registry, "util.sleep", {"seconds": 2.5}, ctx) == {"slept": 2.5, "cancelled": False}
    assert fast_sleep == [1.0, 1.0, 0.5]
    assert ctx.reports == [
        (40.0, "slept 1s of 2.5s"),
        (80.0, "slept 2s of 2.5s"),
        (100.0, "slept 2.5s of 2.5s"),
    ]


def test_sleep_stops_when_cancelled(registry: Registry, fast_sleep: list[float]) -> None:
    ctx = FakeContext(cancel_after=2)
    assert call(registry, "util.sleep", {"seconds": 10}, ctx) == {"slept": 2.0, "cancelled": True}
    assert fast_sleep == [1.0, 1.0]


def test_sleep_cancelled_before_start(registry: Registry, fast_sleep: list[float]) -> None:
    ctx = FakeContext(cancel_after=0)
    assert call(registry, "util.sleep", {"seconds": 3}, ctx) == {"slept": 0.0, "cancelled": True}
    assert fast_sleep == []


def test_sleep_zero(registry: Registry, fast_sleep: list[float]) -> None:
    ctx = FakeContext()
    assert call(registry, "util.sleep", {"seconds": 0}, ctx) == {"slept": 0, "cancelled": False}
    assert ctx.reports == [(100.0, "slept 0s of 0s")]


def test_sleep_really_sleeps(registry: Registry) -> None:
    started = time.perf_counter()
    assert call(registry, "util.sleep", {"seconds": 0.05})["cancelled"] is False
    assert time.perf_counter() - started >= 0.05


@pytest.mark.parametrize("bad", [-1, 86_401, "long", None])
def test_sleep_refuses_bad_seconds(registry: Registry, bad: Any) -> None:
    with pytest.raises(InvalidInput, match=r"input\.seconds"):
        registry.get("util.sleep").validate_input({"seconds": bad})


def test_sleep_takes_context(registry: Registry) -> None:
    task_type = registry.get("util.sleep")
    assert task_type.takes_context and task_type.is_async
    assert set(task_type.input_model.model_fields) == {"seconds"}


# --- util.fail -----------------------------------------------------------------------------


def test_fail_retryable_raises_ordinary_error(registry: Registry) -> None:
    with pytest.raises(RuntimeError, match="failed on purpose") as info:
        call(registry, "util.fail", {})
    assert not isinstance(info.value, Fatal)


def test_fail_not_retryable_raises_fatal(registry: Registry) -> None:
    with pytest.raises(Fatal, match="boom"):
        call(registry, "util.fail", {"message": "boom", "retryable": False})


# --- agent task types -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(agents.AGENT_TASK_TYPES))
def test_agent_types_are_schema_only_with_capability(registry: Registry, name: str) -> None:
    task_type = registry.get(name)
    assert not task_type.executable
    assert task_type.capabilities == ([] if name == "general" else [name])
    assert len(task_type.description) > 40
    data = {"title": "t", "instructions": "do it", "context": {"k": [1]}, "deadline": "friday"}
    assert task_type.validate_input(data) == {**data, "description": None}


def test_agent_input_context_must_be_object(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match=r"input\.context"):
        registry.get("research").validate_input({"context": "not an object"})
