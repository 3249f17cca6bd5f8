"""Registry, TaskType and input-schema behaviour, independent of any built-in task."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from offload.core.registry import (
    Registry,
    TaskContext,
    TaskType,
    model_from_signature,
)
from offload.domain.errors import InvalidInput, UnknownTaskType
from offload.tasks import builtin_types, register_builtins


class Point(BaseModel):
    x: int
    y: int = 0


def add(a: int, b: int = 2) -> int:
    return a + b


def add_with_ctx(a: int, ctx: TaskContext) -> int:
    return a


def moved(point: Point) -> int:
    return point.x + point.y


def bounded(n: Annotated[int, Field(ge=0, le=10)]) -> int:
    return n


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    reg.task("math.factorial")(add)
    reg.task("math.fibonacci")(add)
    reg.task("geo.move")(moved)
    reg.task("demo.bounded")(bounded)
    return reg


# --- model_from_signature -------------------------------------------------------------


def test_model_from_signature_plain_parameters() -> None:
    model, model_param, takes_ctx = model_from_signature("demo.add", add)
    assert model_param is None
    assert takes_ctx is False
    schema = model.model_json_schema()
    assert schema["required"] == ["a"]
    assert schema["properties"]["b"]["default"] == 2
    assert schema["additionalProperties"] is False


def test_model_from_signature_excludes_ctx() -> None:
    model, _, takes_ctx = model_from_signature("demo.ctx", add_with_ctx)
    assert takes_ctx is True
    assert set(model.model_fields) == {"a"}


def test_model_from_signature_single_pydantic_model_is_the_schema() -> None:
    model, model_param, takes_ctx = model_from_signature("geo.move", moved)
    assert model is Point
    assert model_param == "point"
    assert takes_ctx is False


def test_annotated_field_constraints_are_kept() -> None:
    # Regression: get_type_hints() without include_extras dropped Annotated[..., Field(...)],
    # so limits declared in a signature were silently not enforced.
    model, _, _ = model_from_signature("demo.bounded", bounded)
    schema = model.model_json_schema()["properties"]["n"]
    assert (schema["minimum"], schema["maximum"]) == (0, 10)


# --- TaskType.validate_input / call_kwargs ----------------------------------------------


def test_validate_input_missing_field_names_it(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.get("math.factorial").validate_input({})
    assert "input.a" in info.value.message
    assert info.value.field == "input.a"
    assert info.value.details["errors"][0]["field"] == "input.a"


def test_validate_input_wrong_type(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.get("math.factorial").validate_input({"a": "ten"})
    assert "input.a" in info.value.message
    assert "integer" in info.value.message


def test_validate_input_refuses_unknown_field(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.get("math.factorial").validate_input({"a": 1, "c": 3})
    assert "input.c: unexpected field" in info.value.message


def test_validate_input_refuses_non_object(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.get("math.factorial").validate_input([1, 2])
    assert info.value.field == "input"
    assert "JSON object" in info.value.message


def test_validate_input_enforces_annotated_limits(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.get("demo.bounded").validate_input({"n": 11})
    assert "input.n" in info.value.message


def test_validate_input_fills_defaults_and_none_is_empty() -> None:
    reg = Registry()
    reg.task("demo.defaults")(lambda b=2: b)
    assert reg.get("demo.defaults").validate_input(None) == {"b": 2}


def test_validate_input_nested_model_names_nested_field(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.get("geo.move").validate_input({"x": "left"})
    assert info.value.field == "input.x"


def test_call_kwargs_plain_and_model_param(registry: Registry) -> None:
    plain = registry.get("math.factorial")
    assert plain.call_kwargs({"a": 1}) == {"a": 1, "b": 2}
    assert plain.handler is not None
    assert plain.handler(**plain.call_kwargs({"a": 1})) == 3

    model_type = registry.get("geo.move")
    kwargs = model_type.call_kwargs({"x": 4, "y": 5})
    assert kwargs == {"point": Point(x=4, y=5)}
    assert model_type.handler is not None
    assert model_type.handler(**kwargs) == 9


# --- Registry ----------------------------------------------------------------------------


def test_suggest_finds_typo(registry: Registry) -> None:
    assert registry.suggest("math.factorail")[0] == "math.factorial"


def test_suggest_falls_back_to_family_prefix(registry: Registry) -> None:
    assert set(registry.suggest("math.zzzzzzzzzzzz")) == {"math.factorial", "math.fibonacci"}


def test_get_unknown_raises_with_suggestions(registry: Registry) -> None:
    with pytest.raises(UnknownTaskType) as info:
        registry.get("math.factorail")
    assert info.value.code == "unknown_task_type"
    assert "math.factorial" in info.value.details["suggestions"]
    assert "did you mean math.factorial" in info.value.message


def test_get_unknown_without_close_names() -> None:
    with pytest.raises(UnknownTaskType) as info:
        Registry().get("nothing.here")
    assert info.value.details["suggestions"] == []


def test_find_contains_names_and_iteration(registry: Registry) -> None:
    assert registry.find("nope") is None
    assert "geo.move" in registry
    assert registry.names() == ["demo.bounded", "geo.move", "math.factorial", "math.fibonacci"]
    assert [t.name for t in registry] == registry.names()


def test_task_decorator_records_options_and_docstring() -> None:
    reg = Registry()

    @reg.task("demo.slow", capabilities=["gpu"], retries=5, timeout_s=9.0, queue="batch")
    async def slow(x: int, ctx: TaskContext) -> int:
        """Do it slowly."""
        return x

    task_type = reg.get("demo.slow")
    assert task_type.is_async and task_type.takes_context and task_type.executable
    assert (task_type.max_retries, task_type.timeout_s, task_type.queue) == (5, 9.0, "batch")
    assert task_type.capabilities == ["gpu"]
    assert task_type.description == "Do it slowly."
    assert slow.__name__ == "slow"  # the decorator returns the function itself


def test_task_decorator_default_name_is_qualified() -> None:
    reg = Registry()
    reg.task()(add)
    assert reg.names() == [f"{add.__module__}.add"]


def test_declare_is_schema_only() -> None:
    reg = Registry()
    declared = reg.declare("review", description="Review it.", capabilities=["review"])
    assert not declared.executable
    assert reg.executable_names() == []
    info = declared.info()
    assert (info.executable, info.capabilities, info.description) == (
        False,
        ["review"],
        "Review it.",
    )


def test_add_replaces_same_name() -> None:
    reg = Registry()
    reg.task("demo.x")(add)
    replacement = reg.add(TaskType(name="demo.x", input_model=Point))
    assert reg.get("demo.x") is replacement


def test_infos_have_json_schemas(registry: Registry) -> None:
    infos = registry.infos()
    assert [i.name for i in infos] == registry.names()
    assert all(i.input_schema["type"] == "object" for i in infos)


# --- register_builtins -------------------------------------------------------------------

BUILTIN_NAMES = {
    "util.echo",
    "util.sleep",
    "util.fail",
    "math.factorial",
    "math.evaluate",
    "general",
    "analysis",
    "coding",
    "research",
    "review",
    "documentation",
}


def test_register_builtins_adds_every_family() -> None:
    reg = Registry()
    register_builtins(reg)
    assert set(reg.names()) == BUILTIN_NAMES
    assert {t.name for t in builtin_types()} == BUILTIN_NAMES


def test_register_builtins_is_idempotent() -> None:
    reg = Registry()
    register_builtins(reg)
    first = {t.name: t for t in reg}
    register_builtins(reg)
    assert {t.name: t for t in reg} == first
    assert all(reg.get(name) is first[name] for name in first)


def test_importing_tasks_does_not_touch_default_registry() -> None:
    # In a fresh interpreter: other tests in this process open clients, which do register
    # the built-ins into the default registry on purpose.
    import subprocess
    import sys

    code = (
        "import offload.tasks; from offload.core.registry import default_registry; "
        "print(','.join(default_registry.names()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert not BUILTIN_NAMES & set(filter(None, out.split(",")))


def test_register_builtins_keeps_application_override() -> None:
    reg = Registry()
    reg.task("math.factorial")(add)
    register_builtins(reg)
    assert reg.get("math.factorial").handler is add
    assert "math.evaluate" in reg


def test_registries_get_independent_copies() -> None:
    one, two = Registry(), Registry()
    register_builtins(one)
    register_builtins(two)
    one.get("research").capabilities.append("extra")
    one.get("util.sleep").timeout_s = 1.0
    assert two.get("research").capabilities == ["research"]
    assert two.get("util.sleep").timeout_s is None
    assert next(t for t in builtin_types() if t.name == "research").capabilities == ["research"]


def test_builtin_infos_are_documented() -> None:
    reg = Registry()
    register_builtins(reg)
    for info in reg.infos():
        assert info.description.strip(), info.name
        assert info.input_schema["type"] == "object", info.name


def test_async_builtin_is_detected() -> None:
    reg = Registry()
    register_builtins(reg)
    echo = reg.get("util.echo")
    assert echo.is_async and echo.model_param == "payload"
    assert echo.handler is not None
    result: Any = asyncio.run(echo.handler(**echo.call_kwargs({"k": 1})))
    assert result == {"k": 1}


@pytest.mark.parametrize("retries", [-1, 101, 2**40, 2.5, True])
def test_a_type_with_retries_outside_0_to_100_is_refused_at_declaration(retries: Any) -> None:
    reg = Registry()
    with pytest.raises(InvalidInput, match=r"t\.bad: retries must be") as caught:
        reg.task("t.bad", retries=retries)(add)
    assert caught.value.field == "retries"
    with pytest.raises(InvalidInput, match="retries must be"):
        reg.declare("t.declared", max_retries=retries)
    assert "t.bad" not in reg and "t.declared" not in reg
    reg.task("t.ok", retries=100)(add)
    reg.task("t.none", retries=0)(add)
