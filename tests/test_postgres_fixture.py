"""The PostgreSQL fixtures themselves: each test gets a fresh schema, reachable from its URL alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import PgAdmin, with_search_path

seen_schemas: list[str] = []


def current_schema(url: str) -> str:
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as connection:
        row = connection.execute("SELECT current_schema()").fetchone()
    assert row is not None
    return str(row[0])


def test_the_url_works_in_a_fresh_empty_schema(pg_url: str, pg_admin: PgAdmin) -> None:
    assert pg_admin.schema.startswith("zt_")
    assert current_schema(pg_url) == pg_admin.schema
    assert pg_admin.query("SELECT count(*) FROM pg_tables WHERE schemaname = %s", pg_admin.schema) == [(0,)]
    pg_admin.query("CREATE TABLE tasks (id text PRIMARY KEY)")
    assert pg_admin.query("SELECT to_regclass(%s)::text", f"{pg_admin.schema}.tasks") == [("tasks",)]
    import psycopg

    before = pg_admin.connections()  # other sessions on the server's database may come and go; this one adds one
    with psycopg.connect(pg_url):
        assert pg_admin.connections() >= before + 1 or before > 0


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_its_own_schema(pg_admin: PgAdmin, round_: int) -> None:
    assert pg_admin.schema not in seen_schemas
    seen_schemas.append(pg_admin.schema)


def test_the_url_carries_the_schema_to_another_process(pg_url: str, pg_admin: PgAdmin) -> None:
    code = ("import os, psycopg; c = psycopg.connect(os.environ['ZIMAGE_STORE_URL']);"
            " print(c.execute('SELECT current_schema()').fetchone()[0])")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ZIMAGE_STORE_URL": pg_url},
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == pg_admin.schema


def test_the_search_path_joins_options_already_in_the_url() -> None:
    url = with_search_path("postgresql://u:p@127.0.0.1:5432/db?sslmode=disable&options=-cstatement_timeout%3D5000",
                           "zt_1")
    assert url == ("postgresql://u:p@127.0.0.1:5432/db?sslmode=disable"
                   "&options=-cstatement_timeout%3D5000%20-csearch_path%3Dzt_1")
