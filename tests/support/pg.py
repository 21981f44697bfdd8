"""A throwaway PostgreSQL cluster for tests and benchmarks, started with initdb/pg_ctl.

Runs the server as the `postgres` OS user when we are root (PostgreSQL refuses to run as
root). `TEST_DATABASE_URL` skips all of this and uses an existing server instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def _bindir() -> Path:
    for name in ("pg_ctl", "initdb"):
        found = shutil.which(name)
        if found:
            return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise PostgresUnavailable("no initdb/pg_ctl found (install PostgreSQL server binaries)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    datadir: Path
    port: int
    bindir: Path
    as_postgres: bool

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        res = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir / "data"),
            "-l",
            str(self.datadir / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )
        if res.returncode != 0:
            log = self.datadir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {res.stderr.strip()} {tail}")

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir / "data"), "-m", mode, "-w", "stop"
        )

    def is_running(self) -> bool:
        res = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir / "data"), "status")
        return res.returncode == 0

    def outage_stop(self) -> None:
        """Stop the server (fast: sessions are cut off, as in a crash or failover) and make
        sure it is down; `start()` brings it back on the same port and data directory."""
        self.stop("fast")
        if self.is_running():
            raise PostgresUnavailable("pg_ctl stop did not stop the server")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)


def start_cluster() -> PgCluster:
    bindir = _bindir()
    as_postgres = os.geteuid() == 0
    datadir = Path(tempfile.mkdtemp(prefix="pw-pg-"))
    cluster = PgCluster(datadir, _free_port(), bindir, as_postgres)
    if as_postgres:
        shutil.chown(datadir, "postgres", "postgres")
        os.chmod(datadir, 0o700)
    res = cluster._run(
        str(bindir / "initdb"),
        "-D",
        str(datadir / "data"),
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-sync",
    )
    if res.returncode != 0:
        shutil.rmtree(datadir, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {res.stderr.strip()}")
    cluster.start()
    return cluster
