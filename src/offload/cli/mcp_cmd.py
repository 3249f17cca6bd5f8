"""``offload mcp``: serve the MCP server on stdio for Claude Desktop, Claude Code and others."""

from __future__ import annotations

import os

from offload.cli.common import DATABASE_URL_ENV, DatabaseUrl, Imports, split_list


def mcp(
    database_url: DatabaseUrl = None,
    *,
    imports: Imports = None,
) -> None:
    """Serve MCP on stdin/stdout (for an MCP client to launch; see docs/mcp.md).

    Talks to $OFFLOAD_URL (with $OFFLOAD_TOKEN) when set, else to the local database.
    """
    from offload.mcp.stdio import run_stdio

    modules = split_list(imports) + split_list([os.environ.get("OFFLOAD_IMPORTS", "")])
    if modules:
        # Task types must be known where tasks are submitted, not only in the worker.
        from offload.worker.runtime import load_imports

        load_imports(modules)
    # Same precedence as every other command: an explicit --database-url beats $OFFLOAD_URL.
    explicit_db = bool(database_url) and database_url != os.environ.get(DATABASE_URL_ENV)
    url = None if explicit_db else os.environ.get("OFFLOAD_URL") or None
    run_stdio(url=url, token=os.environ.get("OFFLOAD_TOKEN") or None, database_url=database_url)
