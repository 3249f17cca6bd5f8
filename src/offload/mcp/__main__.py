"""``python -m offload.mcp``: the MCP server on stdio, without the CLI's dependencies.

Reads ``OFFLOAD_URL``/``OFFLOAD_TOKEN`` (a server) or ``OFFLOAD_DATABASE_URL`` (the local
database, the default); ``OFFLOAD_IMPORTS`` names modules with more task types.
"""

from __future__ import annotations

import argparse
import os
import sys

from offload.domain.errors import OffloadError


def main(argv: list[str] | None = None) -> int:
    """Parse options and serve MCP on stdin/stdout until the client disconnects."""
    parser = argparse.ArgumentParser(prog="python -m offload.mcp", description=__doc__)
    parser.add_argument("--database-url", help="default: $OFFLOAD_DATABASE_URL or ~/.offload")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="module defining task types (repeatable, comma lists allowed)",
    )
    args = parser.parse_args(argv)

    from offload.mcp.stdio import run_stdio

    try:
        imports = [*(args.imports or []), os.environ.get("OFFLOAD_IMPORTS", "")]
        if any(m.strip() for m in imports):
            # Task types must be known where tasks are submitted, not only in the worker.
            from offload.worker.runtime import load_imports

            load_imports(imports)
        url = None if args.database_url else os.environ.get("OFFLOAD_URL") or None
        run_stdio(
            url=url,
            token=os.environ.get("OFFLOAD_TOKEN") or None,
            database_url=args.database_url,
        )
    except OffloadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
