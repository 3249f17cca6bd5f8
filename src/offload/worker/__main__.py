"""``python -m offload.worker``: a worker without the CLI's dependencies (tests, containers).

Takes the same options as ``offload worker``. ``OFFLOAD_IMPORTS`` (comma list) adds modules
to ``--import``; ``OFFLOAD_LEASE_TTL`` applies when ``--lease-ttl`` is not given.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from offload.domain.errors import OffloadError


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    """Parse options, import task modules, run a worker until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m offload.worker", description=__doc__)
    parser.add_argument("--database-url", help="default: $OFFLOAD_DATABASE_URL or ~/.offload")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="module defining task types (repeatable, comma lists allowed)",
    )
    parser.add_argument("--capabilities", action="append", help="e.g. math,data")
    parser.add_argument("--queues", action="append", help="default: default")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=None, help="default: adaptive")
    parser.add_argument("--lease-ttl", type=float, default=None, help="seconds")
    parser.add_argument("--grace", type=float, default=30.0, help="shutdown grace, seconds")
    parser.add_argument("--name", default=None)
    parser.add_argument("--log-level", default=os.environ.get("OFFLOAD_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from offload.client.base import Client
    from offload.core.heap import freeze_startup_heap
    from offload.worker.runtime import Worker, load_imports

    try:
        load_imports(_split(args.imports) + _split([os.environ.get("OFFLOAD_IMPORTS", "")]))
        with Client(database_url=args.database_url) as client:
            freeze_startup_heap()
            Worker(
                client,
                capabilities=_split(args.capabilities) or None,
                concurrency=args.concurrency,
                queues=_split(args.queues) or None,
                lease_ttl_s=args.lease_ttl,
                name=args.name,
                grace_s=args.grace,
                prefetch=args.prefetch,
            ).run()
    except OffloadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
