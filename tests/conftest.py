"""Suite-wide fixtures: the throwaway PostgreSQL server.

Missing PostgreSQL binaries skip the PostgreSQL tests locally and fail them under CI
(``CI`` set), so a CI run can never pass while silently testing one backend only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pgcluster import PgCluster, binaries_present


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgCluster]:
    """A PostgreSQL server with a migrated template database (session-wide)."""
    external = os.environ.get("OFFLOAD_TEST_POSTGRES_URL")
    if external:
        cluster = PgCluster(base_url=external)
    elif binaries_present():
        cluster = PgCluster.start()
    elif os.environ.get("CI"):
        pytest.fail(
            "PostgreSQL 15 binaries are missing (/usr/lib/postgresql/15/bin); CI "
            "must run the PostgreSQL tests"
        )
    else:
        pytest.skip("PostgreSQL binaries not installed; set OFFLOAD_TEST_POSTGRES_URL")
    try:
        cluster.make_template()
        yield cluster
    finally:
        cluster.stop()
