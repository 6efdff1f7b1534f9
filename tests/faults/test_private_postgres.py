"""On a PostgreSQL cluster this session started: what needs a role or a server of its own."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.faults.harness import PostgresServer
from worker.cli import main

pytestmark = pytest.mark.postgres


def test_a_role_that_may_not_create_the_database_gets_one_clear_line(
    private_postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = create_engine(private_postgres.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("CREATE ROLE clerk LOGIN NOCREATEDB"))
    admin.dispose()
    url = make_url(private_postgres.admin_url).set(username="clerk", database="books")
    monkeypatch.setenv("BILLING_DATABASE_URL", url.render_as_string(hide_password=False))
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: database 'books' does not exist and role 'clerk' cannot create it"
        " (permission denied to create database): create it as an administrator,"
        " e.g. createdb -O clerk books"
    ]
