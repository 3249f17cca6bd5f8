"""Words for agents: the server's instructions and the ``offload_guide`` prompt."""

from __future__ import annotations

#: Sent to every client at connection time; most clients put it in the model's context.
INSTRUCTIONS = """\
Offload is a durable task queue. Hand it work you should not do in your head or inline:
exact math (big integers, factorials, exact fractions), anything over many rows of data,
and jobs that take longer than a reply. Workers compute built-in types exactly; free-form
types (general, research, coding, …) are done by other agents.

How: list_task_types (once) -> submit_agent_task(task_type, input) -> wait_for_task(task_id)
-> read `result`. Several dependent steps: submit_workflow. Tasks survive restarts; ids
stay valid, so you can come back to a task later with get_task_status.
"""

GUIDE = """\
# Offloading work to Offload

## When to offload (instead of answering inline)
- **Exact math.** Large integers, factorials, powers, exact fractions or long arithmetic:
  language models round or drop digits; a task computes them exactly.
  `math.factorial {"n": 30}`, `math.evaluate {"expression": "(2**64 - 1) / 3"}`.
- **Data over many rows.** Anything where you would otherwise read, count, sum or compare
  more than a few dozen rows by eye: hand the data (or where it lives) to a task.
- **Long jobs.** Work that takes more than a few seconds, must survive a restart, should run
  in parallel, or must be retried on failure.
- **Work for another agent.** Free-form types (`general`, `analysis`, `coding`, `research`,
  `review`, `documentation`) queue work described in words for an agent with that skill.
Do it inline when it is small, fuzzy and needs judgement rather than exactness.

## How
1. `list_task_types` (once per session): the types, what each does, and its input schema.
2. `submit_agent_task(task_type="math.factorial", input={"n": 10})` -> a task with an `id`.
3. `wait_for_task(task_id=ID, timeout_s=30)` -> when `done` is true, read `result`;
   when not, call it again (the task keeps running meanwhile).
4. Use the result verbatim: do not re-compute or round it.

Several steps that feed each other: `submit_workflow` with `tasks=[{ref, task_type, input,
depends_on}]`; a step's input can take an earlier step's result with
`{"$ref": "<ref>.result"}` (or `.result.<field>`). Wait for the workflow's id: its result
maps each ref to that step's result.

## When something goes wrong
- Errors say what to fix: an unknown type suggests the right name; bad input names the field
  and shows the schema. Fix the call and try again.
- `status: failed` with `error.retryable: false` means the input was wrong: submit a new,
  corrected task. Otherwise `retry_task` runs it again.
- Long results come back in pages (`result_page`, `next_result_offset`); fetch more with
  `get_task_status(task_id, result_offset=...)`.
- `cancel_agent_task` stops work that is no longer needed.

## Reviewing other agents' work
A task submitted with a review waits in `status: reviewing` once its work is done. As a
reviewer: `list_reviews(reviewer=<your agent id or "capability:NAME">)` shows the results
to judge; `review_task(task_id, decision="approve"|"reject", feedback=..., quality_score=...)`
decides one. A rejection re-queues the task and the next attempt reads your feedback.
"""


def guide_for(job: str | None) -> str:
    """The guide, followed by the job at hand when one is given."""
    if not job:
        return GUIDE
    return (
        f"{GUIDE}\n## The job at hand\n{job}\n\n"
        "Decide whether any part of it should be offloaded by the rules above. If so, "
        "offload it and use the results exactly as returned; if not, say why and do it inline."
    )
