"""Free-form task types done by external agents: ``general``, ``research``, ``coding``, ….

They have a schema but no handler: an agent (an LLM, a program or a person) claims them
through the API, CLI or MCP and reports the result. Each type except ``general`` requires
the capability of the same name, so only agents that advertise it are offered the work.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from offload.core.registry import Registry

#: This family's task types; :func:`offload.tasks.register_builtins` copies them.
registry = Registry()


class AgentTaskInput(BaseModel):
    """Input of a free-form agent task; fields beyond these are kept for the agent."""

    model_config = ConfigDict(extra="allow")

    title: str | None = Field(None, max_length=500, description="a short name for the work")
    description: str | None = Field(None, description="what is wanted and why")
    instructions: str | None = Field(None, description="how to do it, constraints, format")
    context: dict[str, Any] | None = Field(
        None, description="anything the agent needs: links, data, prior results"
    )


#: Name -> description. Capability: the name itself, except ``general`` (anyone may do it).
AGENT_TASK_TYPES: dict[str, str] = {
    "general": (
        "Any free-form piece of work described in words, for whichever agent claims it "
        "first; no capability required. Use a more specific type when one fits."
    ),
    "analysis": (
        "Examine data, a system or a situation and report findings with evidence: "
        "patterns, causes, comparisons, risks. Requires the 'analysis' capability."
    ),
    "coding": (
        "Write, change or debug code to meet the description and instructions; the result "
        "should say what changed and how it was checked. Requires the 'coding' capability."
    ),
    "research": (
        "Find and synthesise information on a question, citing sources; the result should "
        "separate facts from judgement. Requires the 'research' capability."
    ),
    "review": (
        "Assess a piece of work (code, text, a plan or another task's result, given in "
        "context) against the instructions and return concrete issues and a verdict. "
        "Requires the 'review' capability."
    ),
    "documentation": (
        "Write or update documentation (guides, references, docstrings, READMEs) for the "
        "audience named in the instructions. Requires the 'documentation' capability."
    ),
}

for _name, _description in AGENT_TASK_TYPES.items():
    registry.declare(
        _name,
        input_model=AgentTaskInput,
        description=_description,
        capabilities=[] if _name == "general" else [_name],
    )
