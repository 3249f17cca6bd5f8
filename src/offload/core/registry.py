"""Task types: names, input schemas (from handler signatures), defaults and handlers.

``@offload.task("math.factorial", capabilities=["math"])`` registers a function in the
default registry. The input schema comes from the signature through pydantic, so bad input
is refused at submit time with a message naming the field.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from offload.domain.errors import InvalidInput, UnknownTaskType
from offload.domain.flow import ConcurrencyStrategy, LimitSpec
from offload.domain.models import (
    MAX_RETRIES,
    Artifact,
    OptionalReviewSpec,
    RetryPolicy,
    ReviewSpec,
    Task,
    TaskTypeInfo,
)

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_PARAM = "ctx"
_REVIEW_OPTION: TypeAdapter[ReviewSpec | None] = TypeAdapter(OptionalReviewSpec)


class TaskContext(Protocol):
    """What a running handler can see and do. Methods never block; the worker ships updates."""

    task: Task

    @property
    def cancelled(self) -> bool:
        """True once cancel (or pause) was requested or the attempt timed out: stop soon."""
        ...

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, …"""
        ...

    @property
    def review_feedback(self) -> str | None:
        """The reviewer's feedback on the previous attempt's rejected result, or None."""
        ...

    def progress(self, percent: float | None = None, step: str | None = None) -> None:
        """Report progress (0–100) and/or the current step."""
        ...

    def log(self, message: str, level: str = "info") -> None:
        """Append a log line to the task's event log."""
        ...

    def checkpoint(self, name: str, data: Any = None) -> None:
        """Save a named checkpoint; a later attempt finds it in ``task.checkpoints``."""
        ...

    def artifact(self, artifact: Artifact) -> None:
        """Attach an artifact."""
        ...


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class TaskType:
    """A registered task type."""

    name: str
    input_model: type[BaseModel]
    handler: Callable[..., Any] | None = None
    description: str = ""
    output_schema: dict[str, Any] | None = None
    capabilities: list[str] = field(default_factory=list)
    max_retries: int = 3
    retry: RetryPolicy | None = None
    timeout_s: float | None = None
    queue: str = "default"
    version: int = 1
    takes_context: bool = False
    is_async: bool = False
    #: Flow control (§4.8): limits per type, or per key when ``concurrency_key`` is set.
    concurrency: int | None = None
    concurrency_key: str | None = None
    concurrency_strategy: str = "queue"
    rate_limit: str | None = None
    cache_ttl_s: float | None = None
    #: Handler batching (§4.11): the handler takes a list of inputs (``batch_param``), as
    #: models or dicts (``batch_models``), and returns one result per input.
    batch_size: int | None = None
    batch_wait_ms: float | None = None
    batch_param: str | None = None
    batch_models: bool = False
    #: A single pydantic-model parameter receives the whole validated model.
    model_param: str | None = None
    #: Review every result of this type (``review={"reviewer": "human"}`` or a ReviewSpec).
    #: A dict (or ``True``) given at registration is validated there.
    review: ReviewSpec | None = None

    def __post_init__(self) -> None:
        value: object = self.review
        if value is not None and not isinstance(value, ReviewSpec):
            # Checked at registration, so a bad review setting fails where it is written.
            self.review = _REVIEW_OPTION.validate_python(value)

    def limit_spec(self) -> LimitSpec | None:
        """The limits declared in code, validated (None when the type declares none)."""
        if self.concurrency is None and self.rate_limit is None:
            return None
        try:
            return LimitSpec(
                concurrency=self.concurrency,
                concurrency_key=self.concurrency_key,
                strategy=ConcurrencyStrategy(self.concurrency_strategy),
                rate_limit=self.rate_limit,
            )
        except (ValidationError, ValueError) as exc:
            raise InvalidInput(
                f"task type {self.name}: bad limits: {exc}", field="limits"
            ) from None

    @property
    def executable(self) -> bool:
        """True when this process can run the type itself."""
        return self.handler is not None

    def validate_input(self, data: Any) -> dict[str, Any]:
        """Validate and normalise input; raise :class:`InvalidInput` naming the bad field."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InvalidInput(
                f"input for {self.name} must be a JSON object, got {type(data).__name__}",
                field="input",
            )
        try:
            model = self.input_model.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(
                _describe(self.name, exc), field=_first_field(exc), details={"errors": _errors(exc)}
            ) from None
        return model.model_dump(mode="json")

    def batch_item(self, data: Any) -> Any:
        """One task's input as a batch handler's item (a model, or a plain dict)."""
        model = self.input_model.model_validate(data if data is not None else {})
        return model if self.batch_models else model.model_dump(mode="json")

    def call_kwargs(self, data: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the handler from stored (already validated) input."""
        model = self.input_model.model_validate(data)
        if self.model_param is not None:
            return {self.model_param: model}
        return {name: getattr(model, name) for name in type(model).model_fields}

    def info(self) -> TaskTypeInfo:
        """Public description for ``offload types`` and the API."""
        return TaskTypeInfo(
            name=self.name,
            description=self.description,
            input_schema=self.input_model.model_json_schema(),
            output_schema=self.output_schema,
            capabilities=list(self.capabilities),
            max_retries=self.max_retries,
            timeout_s=self.timeout_s,
            queue=self.queue,
            executable=self.executable,
            version=self.version,
            batch_size=self.batch_size,
            batch_wait_ms=self.batch_wait_ms,
            cache_ttl_s=self.cache_ttl_s,
            concurrency=self.concurrency,
            rate_limit=self.rate_limit,
        )


def _loc(err: Any) -> str:
    return ".".join(str(p) for p in err["loc"]) or "input"


def _first_field(exc: ValidationError) -> str:
    errs = exc.errors()
    return f"input.{_loc(errs[0])}" if errs else "input"


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": f"input.{_loc(e)}", "message": e["msg"]} for e in exc.errors()]


def _describe(type_name: str, exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unexpected field"
        parts.append(f"input.{_loc(e)}: {msg}")
    return f"invalid input for {type_name}: " + "; ".join(parts)


class _AnyItem(BaseModel):
    """An item of a batch handler typed ``list[dict]``: any JSON object."""

    model_config = ConfigDict(extra="allow")


def batch_item_model(name: str, fn: Callable[..., Any]) -> tuple[type[BaseModel], str, bool]:
    """For a batch handler ``fn(items: list[Item])``: the item model, the parameter's name
    and whether the items are passed as models (else as dicts)."""
    sig = inspect.signature(fn)
    if CONTEXT_PARAM in sig.parameters:
        raise InvalidInput(
            f"batch handler {name} cannot take ctx: a call serves many tasks", field="handler"
        )
    params = list(sig.parameters.values())
    try:
        hints = get_type_hints(fn)
    except Exception:
        hints = {}
    ann = hints.get(params[0].name) if len(params) == 1 else None
    origin = getattr(ann, "__origin__", None)
    args: tuple[Any, ...] = tuple(getattr(ann, "__args__", ()))
    if len(params) != 1 or origin is not list or len(args) != 1:
        raise InvalidInput(
            f"batch handler {name} must take one parameter typed list[Model] or list[dict] "
            "(each task's input is one item) and return a list of the same length",
            field="handler",
        )
    item = args[0]
    if inspect.isclass(item) and issubclass(item, BaseModel):
        return item, params[0].name, True
    return _AnyItem, params[0].name, False


def model_from_signature(
    name: str, fn: Callable[..., Any]
) -> tuple[type[BaseModel], str | None, bool]:
    """Build the input model from ``fn``'s parameters (``ctx`` excluded).

    Returns ``(model, model_param, takes_context)``; ``model_param`` is set when the
    function takes one pydantic model, which then is the schema.
    """
    sig = inspect.signature(fn)
    try:
        hints = get_type_hints(fn, include_extras=True)  # keep Annotated[..., Field(...)] limits
    except Exception:
        hints = {}
    params = [p for p in sig.parameters.values() if p.name != CONTEXT_PARAM]
    takes_context = CONTEXT_PARAM in sig.parameters
    if len(params) == 1:
        ann = hints.get(params[0].name)
        if inspect.isclass(ann) and issubclass(ann, BaseModel):
            return ann, params[0].name, takes_context
    fields: dict[str, Any] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = hints.get(p.name, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (ann, default)
    model_name = "".join(part.title() for part in name.replace("-", ".").split(".")) + "Input"
    model = create_model(model_name, __base__=_Input, **fields)
    return model, None, takes_context


class Registry:
    """Task types by name."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] = {}

    def add(self, task_type: TaskType) -> TaskType:
        """Register (or replace) a type."""
        task_type.limit_spec()  # bad limits are refused at declaration, not at first use
        retries = task_type.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise InvalidInput(
                f"{task_type.name}: retries must be a whole number, got {retries!r}",
                field="retries",
            )
        if not 0 <= retries <= MAX_RETRIES:
            # As for a task's own max_retries; a bigger default could not even be stored.
            raise InvalidInput(
                f"{task_type.name}: retries must be 0-{MAX_RETRIES}, got {retries}",
                field="retries",
            )
        self._types[task_type.name] = task_type
        return task_type

    def declare(
        self,
        name: str,
        *,
        input_model: type[BaseModel] | None = None,
        description: str = "",
        capabilities: list[str] | None = None,
        **defaults: Any,
    ) -> TaskType:
        """Declare a type by schema alone, for work done by external agents."""
        model = input_model or create_model(
            "".join(p.title() for p in name.split(".")) + "Input", __base__=BaseModel
        )
        return self.add(
            TaskType(
                name=name,
                input_model=model,
                description=description,
                capabilities=list(capabilities or []),
                **defaults,
            )
        )

    def task(
        self,
        name: str | None = None,
        *,
        capabilities: list[str] | None = None,
        retries: int = 3,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
        queue: str = "default",
        description: str | None = None,
        version: int = 1,
        output_schema: dict[str, Any] | None = None,
        **options: Any,
    ) -> Callable[[F], F]:
        """Decorator registering a sync or async function as a task type."""

        def decorate(fn: F) -> F:
            type_name = name or f"{fn.__module__}.{fn.__qualname__}"
            if options.get("batch_size") is not None:
                if int(options["batch_size"]) < 1:
                    raise InvalidInput(f"{type_name}: batch_size must be 1 or more")
                item, param, as_models = batch_item_model(type_name, fn)
                options["batch_param"] = param
                options["batch_models"] = as_models
                model, model_param, takes_ctx = item, None, False
            else:
                model, model_param, takes_ctx = model_from_signature(type_name, fn)
            doc = description if description is not None else inspect.getdoc(fn) or ""
            self.add(
                TaskType(
                    name=type_name,
                    input_model=model,
                    handler=fn,
                    description=doc,
                    output_schema=output_schema,
                    capabilities=list(capabilities or []),
                    max_retries=retries,
                    retry=retry,
                    timeout_s=timeout_s,
                    queue=queue,
                    version=version,
                    takes_context=takes_ctx,
                    is_async=inspect.iscoroutinefunction(fn),
                    model_param=model_param,
                    **options,
                )
            )
            return fn

        return decorate

    def get(self, name: str) -> TaskType:
        """The type called ``name``; :class:`UnknownTaskType` with close names otherwise."""
        try:
            return self._types[name]
        except KeyError:
            raise UnknownTaskType(name, self.suggest(name)) from None

    def find(self, name: str) -> TaskType | None:
        """The type called ``name`` or None."""
        return self._types.get(name)

    def suggest(self, name: str) -> list[str]:
        """Registered names close to ``name``."""
        names = list(self._types)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        if not close:
            prefix = name.split(".", 1)[0]
            close = [n for n in names if n.startswith(prefix + ".")][:3]
        return close

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._types)

    def executable_names(self) -> list[str]:
        """Names of types with a handler in this process."""
        return sorted(n for n, t in self._types.items() if t.executable)

    def __iter__(self) -> Iterator[TaskType]:
        return iter(sorted(self._types.values(), key=lambda t: t.name))

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def infos(self) -> list[TaskTypeInfo]:
        """Public descriptions of every type."""
        return [t.info() for t in self]


#: The registry ``@offload.task`` writes to. Services take a registry explicitly, so tests
#: and embedders can use their own.
default_registry = Registry()
task = default_registry.task


def load_task_modules(modules: Iterable[str]) -> list[ModuleType]:
    """Import the modules that define ``@offload.task`` types (``--import``/``OFFLOAD_IMPORTS``).

    Each entry is a dotted module name (``my_tasks``, ``app.tasks``) or a path to a ``.py``
    file. The current directory is importable, as with ``python -m``. A failure raises
    :class:`InvalidInput` with one line naming the module and the reason.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    loaded: list[ModuleType] = []
    for raw in modules:
        for name in (part.strip() for part in raw.split(",")):
            if not name:
                continue
            try:
                is_path = name.endswith(".py") or os.sep in name
                loaded.append(_import_file(name) if is_path else importlib.import_module(name))
            except Exception as exc:  # any import failure becomes one clear line
                raise InvalidInput(
                    f"cannot import {name!r}: {_why(name, exc)}", field="import"
                ) from exc
    return loaded


def _import_file(path: str) -> ModuleType:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file {path}")
    module_name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _why(name: str, exc: Exception) -> str:
    if (
        isinstance(exc, ModuleNotFoundError)
        and exc.name is not None
        and (name == exc.name or name.startswith(exc.name + "."))
    ):
        return (
            f"no module named {exc.name!r} (run from the project directory or add it to PYTHONPATH)"
        )
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"
