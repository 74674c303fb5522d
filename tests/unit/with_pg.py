#!/usr/bin/env python3
"""Run a unit test program against a private PostgreSQL server.

    with_pg.py PROGRAM [ARGS...]

Starts a server of its own (tests/integration/pgserver.py: initdb and
pg_ctl in a temporary directory, a private socket), creates a database,
runs PROGRAM with ONCEFS_TEST_PG naming it, and stops the server whatever
happens.  Exits with PROGRAM's status, or 77 (skipped) when this machine
has no PostgreSQL server binaries.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import pgserver  # noqa: E402

if not pgserver.available():
    print("no PostgreSQL server binaries (scripts/deps installs postgresql)")
    sys.exit(77)
with pgserver.PgServer() as pg:
    pg.psql("CREATE DATABASE unit")
    env = dict(os.environ, ONCEFS_TEST_PG=pg.socket_url("unit"))
    sys.exit(subprocess.run(sys.argv[1:], env=env).returncode)
