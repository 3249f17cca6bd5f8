"""``offload agent …``: the agent registry (list, workload, drain, register) and
``offload queue dispatch``: how a queue's tasks reach agents."""

from __future__ import annotations

from typing import Annotated

import typer

from offload.cli.common import (
    DatabaseUrl,
    JsonOut,
    dump,
    human_age,
    open_client,
    print_json,
    split_list,
    stdout,
    table,
)
from offload.domain.agents import DispatchMode
from offload.domain.models import Agent, AgentKind, AgentRegistration, AgentStatus

app = typer.Typer(
    help="Agents: list, workload, drain, register, and serve a push agent.", no_args_is_help=True
)
queue_app = typer.Typer(help="Queue settings: how tasks reach agents.", no_args_is_help=True)

AgentIdOpt = Annotated[str, typer.Option("--id", help="Agent id.", show_default=False)]

_STATUS_STYLE = {"online": "green", "busy": "yellow", "draining": "magenta", "offline": "dim"}


def _caps(agent: Agent) -> str:
    return ", ".join(f"{k}:{v:g}" for k, v in sorted(agent.capabilities.items())) or "-"


def _agents_table(agents: list[Agent], caption: str) -> None:
    tbl = table(caption=caption)
    tbl.add_column("id", no_wrap=True, min_width=12)
    tbl.add_column("name", no_wrap=True)
    tbl.add_column("kind")
    tbl.add_column("status")
    tbl.add_column("load", justify="right")
    tbl.add_column("capabilities", overflow="fold")
    tbl.add_column("done/failed", justify="right")
    tbl.add_column("success", justify="right")
    tbl.add_column("heartbeat", justify="right")
    for a in agents:
        rate = a.success_rate
        tbl.add_row(
            a.id,
            a.name,
            a.kind.value,
            f"[{_STATUS_STYLE[a.status.value]}]{a.status.value}[/]",
            f"{a.load}/{a.max_concurrency}",
            _caps(a),
            f"{a.completed}/{a.failed}",
            "-" if rate is None else f"{rate:.0%}",
            human_age(a.last_heartbeat),
        )
    stdout().print(tbl)


@app.command("list")
def list_agents(
    *,
    available: Annotated[
        bool, typer.Option("--available", help="Only online agents with free capacity.")
    ] = False,
    capability: Annotated[
        str | None,
        typer.Option("--capability", help="With --available: having this capability."),
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List agents with status, load, capabilities and history."""
    if capability and not available:
        raise typer.BadParameter("--capability goes with --available", param_hint="--capability")
    with open_client(database_url) as client:
        agents = client.available_agents(capability) if available else client.list_agents()
    if json_out:
        print_json(dump(agents))
        return
    what = "available agents" if available else "agents"
    _agents_table(agents, f"{len(agents)} {what}")


@app.command("workload")
def workload(
    *, agent_id: AgentIdOpt, json_out: JsonOut = False, database_url: DatabaseUrl = None
) -> None:
    """An agent's current tasks and history."""
    with open_client(database_url) as client:
        w = client.agent_workload(agent_id)
    if json_out:
        print_json(dump(w))
        return
    a = w.agent
    rate = "-" if w.success_rate is None else f"{w.success_rate:.0%}"
    mean = "-" if a.mean_duration_s is None else f"{a.mean_duration_s:.2f}s"
    stdout().print(
        f"[bold]{a.name}[/] ({a.id}) {a.kind.value}, {a.status.value}, "
        f"load {a.load}/{a.max_concurrency}\n"
        f"capabilities: {_caps(a)}\n"
        f"history: {a.completed} completed, {a.failed} failed, success {rate}, mean {mean}"
    )
    tbl = table(caption=f"{len(w.tasks)} task(s) held now")
    tbl.add_column("task", no_wrap=True, min_width=36)
    tbl.add_column("type", no_wrap=True)
    tbl.add_column("status")
    tbl.add_column("progress", justify="right")
    tbl.add_column("method")
    for t in w.tasks:
        tbl.add_row(
            t.id,
            t.type,
            t.status.value,
            f"{t.progress:.0f}%",
            t.assignment.method.value if t.assignment else "-",
        )
    stdout().print(tbl)


def _set_status(
    agent_id: str, status: AgentStatus, json_out: bool, database_url: str | None
) -> None:
    with open_client(database_url) as client:
        agent = client.set_agent_status(agent_id, status)
    if json_out:
        print_json(dump(agent))
        return
    stdout().print(f"agent {agent.id}: {agent.status.value}")


@app.command("drain")
def drain(
    *, agent_id: AgentIdOpt, json_out: JsonOut = False, database_url: DatabaseUrl = None
) -> None:
    """Let an agent finish its current work and take no new."""
    _set_status(agent_id, AgentStatus.DRAINING, json_out, database_url)


@app.command("resume")
def resume(
    *, agent_id: AgentIdOpt, json_out: JsonOut = False, database_url: DatabaseUrl = None
) -> None:
    """Let a drained agent take work again."""
    _set_status(agent_id, AgentStatus.ONLINE, json_out, database_url)


@app.command("deregister")
def deregister(
    *, agent_id: AgentIdOpt, json_out: JsonOut = False, database_url: DatabaseUrl = None
) -> None:
    """Retire an agent now: offline, its tasks re-queued for others."""
    _set_status(agent_id, AgentStatus.OFFLINE, json_out, database_url)


@app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Agent name.", show_default=False)],
    *,
    agent_id: Annotated[
        str | None, typer.Option("--id", help="Agent id (default: a new one).")
    ] = None,
    kind: Annotated[AgentKind, typer.Option("--kind", help="llm, program or human.")] = (
        AgentKind.LLM
    ),
    capabilities: Annotated[
        list[str] | None,
        typer.Option(
            "--capabilities",
            "-c",
            help="Capabilities, optionally with proficiency 0-1: research:0.9,math.",
            show_default=False,
        ),
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option("--max-concurrency", min=1, help="Tasks at once.")
    ] = 1,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="Push endpoint (http://host:port).")
    ] = None,
    queues: Annotated[
        list[str] | None, typer.Option("--queues", "-q", help="Queues (comma list).")
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Register (or update) an agent, e.g. an LLM agent or a person."""
    reg = AgentRegistration(
        id=agent_id,
        name=name,
        kind=kind,
        capabilities=parse_capabilities(capabilities),
        max_concurrency=max_concurrency,
        endpoint=endpoint,
        queues=split_list(queues) or ["default"],
    )
    with open_client(database_url) as client:
        agent = client.register_agent(reg)
    if json_out:
        print_json(dump(agent))
        return
    stdout().print(f"registered agent {agent.id} ({agent.name})")


def parse_capabilities(values: list[str] | None) -> dict[str, float]:
    """``research:0.9,math`` → ``{"research": 0.9, "math": 1.0}``."""
    out: dict[str, float] = {}
    for item in split_list(values):
        name, _, level = item.partition(":")
        try:
            proficiency = float(level) if level else 1.0
        except ValueError:
            raise typer.BadParameter(
                f"{item!r}: proficiency must be a number 0-1", param_hint="--capabilities"
            ) from None
        if not 0.0 <= proficiency <= 1.0:
            raise typer.BadParameter(
                f"{item!r}: proficiency must be between 0 and 1", param_hint="--capabilities"
            )
        out[name.strip()] = proficiency
    return out


@queue_app.command("dispatch")
def dispatch(
    queue: Annotated[str, typer.Argument(help="Queue name.", show_default=False)],
    *,
    mode: Annotated[
        DispatchMode | None,
        typer.Option("--mode", help="pull, push, hybrid or auction (omit to show)."),
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option("--threshold", min=1, max=10, help="Hybrid: push priority ≥ this."),
    ] = None,
    window_ms: Annotated[
        int | None,
        typer.Option("--window-ms", min=10, help="Auction: bidding window, milliseconds."),
    ] = None,
    json_out: JsonOut = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show or set how a queue's tasks reach agents."""
    with open_client(database_url) as client:
        if mode is None and threshold is None and window_ms is None:
            settings = client.get_dispatch(queue)
        else:
            settings = client.set_dispatch(
                queue, mode=mode, hybrid_threshold=threshold, auction_window_ms=window_ms
            )
    if json_out:
        print_json(dump(settings))
        return
    extra = ""
    if settings.mode is DispatchMode.HYBRID:
        extra = f", priority ≥ {settings.hybrid_threshold} pushed"
    elif settings.mode is DispatchMode.AUCTION:
        extra = f", bidding window {settings.auction_window_ms} ms"
    stdout().print(f"queue {settings.queue}: {settings.mode.value}{extra}")
