"""The application's hot path side by side: resolve against a ceiling, ingest against COPY.

One run, one load generator for every HTTP row (benchmarks.ingest's: a separate process,
asyncio + aiohttp, keep-alive connections on loopback, closed loop, a warm-up, then a fixed
number of seconds):
- ceiling: a minimal aiohttp handler in its own process, a bearer check and a resolve-shaped
  JSON answer from memory; the most an aiohttp server answers on this machine;
- server resolve, GET /v1/prompts/{name}/resolve?unit_id=... with a running two-arm
  experiment, against a real `prompt-worker run` on SQLite and on a throwaway PostgreSQL;
- service ingest, POST /v1/conversations in batches of 500 into PostgreSQL;
- the client SDK (benchmarks.sdk_path): get_prompt per call, in-process, from a
  configuration loaded over HTTP (aim <= 10 us), and log end to end into PostgreSQL through
  the service (conversations/s until the service answered every batch);
- raw COPY: the rows the service stored, copied back with psycopg on one connection the way
  a bulk loader would, --copy-block rows (default 5,000) per COPY and commit, naming the
  columns ingest fills (optimizer.ingest.COLUMNS): into `conversations` itself (its five
  foreign keys are checked row by row and its indexes kept: the database's own ceiling for
  what ingest does), and into a bare table of the same columns without any index or foreign
  key (what "COPY of conversation-shaped rows" costs when nothing is checked).
Then the ratios the aims are stated in: resolve / ceiling (aim >= 50%, p99 < 2 ms) and
service ingest / raw COPY into conversations (aim >= 25%; the ratio to the bare table is
printed beside it), and SDK get_prompt per call. When PostgreSQL cannot start, its rows
are skipped.

Usage: python -m benchmarks.hotpath [--seconds 10] [--concurrency 8] [--warmup 2]
                                    [--copy-block 5000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from benchmarks._replicas import CpuMeter, postmaster_pid  # noqa: E402
from benchmarks.ingest import (  # noqa: E402
    AB,
    ADMIN,
    DEFAULT_MAX_BODY,
    INGEST,
    NEVER,
    Load,
    LoadResult,
    batch_bodies,
    pct,
    run_phase,
    set_up_prompts,
)
from benchmarks.sdk_path import get_prompt_row, log_row  # noqa: E402
from optimizer.db import create_db_engine, migrate  # noqa: E402
from optimizer.ingest import COLUMNS  # noqa: E402
from tests.support.pg import PgCluster, PostgresUnavailable, start_cluster  # noqa: E402
from tests.support.procs import ServiceProcess, free_port, start_service  # noqa: E402

BATCH = 500


@dataclass
class Row:
    label: str
    rate: float  # requests/s (HTTP rows) or COPY statements/s
    items: float  # conversations/s, 0 when a row does not carry conversations
    p50: float
    p99: float
    errors: int
    cpu: str = ""


def other(cpu: dict[str, float]) -> float:
    """CPU every other process on the machine used: above a few % means a noisy run."""
    return max(cpu["machine"] - sum(v for k, v in cpu.items() if k != "machine"), 0.0)


def http_row(label: str, result: LoadResult, cpu: dict[str, float], batch: int = 0) -> Row:
    rate = len(result.latencies_ms) / result.window
    lat = result.latencies_ms
    share = f"server {cpu['service']:.0%}, generator {cpu['generator']:.0%}"
    if "postgres" in cpu:
        share += f", PostgreSQL {cpu['postgres']:.0%}"
    share += f", other {other(cpu):.0%}"
    row = Row(label, rate, rate * batch, pct(lat, 50), pct(lat, 99), sum(result.errors.values()))
    row.cpu = share
    if result.errors:
        print(f"  {label}: errors {result.errors}; first: {result.first_error}")
    return row


# --- wrk: a load generator in C, for the GET rows -----------------------------------------

# Each request asks for another unit (the hashing path), with the ingest token.
WRK_SCRIPT = """
local n = 0
wrk.headers["Authorization"] = "Bearer %s"
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/prompts/%s/resolve?unit_id=wrk-unit-" .. n)
end
"""
WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if match is None:
        raise RuntimeError(f"wrk printed a latency it does not usually print: {text!r}")
    return float(match.group(1)) * WRK_UNITS[match.group(2)]


def wrk_row(label: str, args: argparse.Namespace, base_url: str, meter: CpuMeter) -> Row:
    """`args.seconds` of wrk (one thread, `args.concurrency` keep-alive connections) after a
    warm-up run; latencies from wrk's own --latency distribution."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (INGEST, AB))
    url = f"{base_url}/v1/prompts/{AB}/resolve"
    command = ["wrk", "-t1", f"-c{args.concurrency}", "--latency", "-s", script.name, url]
    try:
        if args.warmup:
            subprocess.run(
                [*command[:1], f"-d{args.warmup:g}s", *command[1:]], check=True, capture_output=True
            )
        proc = subprocess.Popen(
            [*command[:1], f"-d{args.seconds:g}s", *command[1:]],
            stdout=subprocess.PIPE,
            text=True,
        )
        meter.pids["generator"] = [proc.pid]
        meter.start()
        out, _ = proc.communicate(timeout=args.seconds + 60)
        shares = meter.stop()
    finally:
        os.unlink(script.name)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _wrk_ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = (int(bad.group(1)) if bad else 0) + (
        sum(int(g) for g in sockets.groups()) if sockets else 0
    )
    row = Row(label + " [wrk]", rate, 0.0, p50, p99, errors)
    row.cpu = f"server {shares['service']:.0%}, generator {shares['generator']:.0%}"
    if "postgres" in shares:
        row.cpu += f", PostgreSQL {shares['postgres']:.0%}"
    row.cpu += f", other {other(shares):.0%}"
    return row


def get_rows(label: str, args: argparse.Namespace, base_url: str, meter: CpuMeter) -> list[Row]:
    """A GET row with the Python load generator, and with wrk when it is installed (it
    leaves the server more of the machine's two cores)."""
    phase = run_phase(label, resolve_load(args, base_url), meter)
    rows = [http_row(label, phase.result, phase.cpu)]
    if shutil.which("wrk"):
        rows.append(wrk_row(label, args, base_url, meter))
    return rows


# --- the ceiling: a minimal handler in its own process ------------------------------------


def ceiling_main(port: int) -> None:
    expected = f"Bearer {INGEST}"
    answers = [
        json.dumps(
            {
                "prompt": AB,
                "version": version,
                "version_id": version,
                "content": "You are a concise, friendly support bot.",
                "experiment_id": 1,
                "arm": {"id": version, "role": role},
            }
        ).encode()
        for version, role in ((1, "control"), (2, "variant"))
    ]

    async def resolve(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        unit = request.query.get("unit_id", "")
        body = answers[hash(unit) & 1]
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/prompts/{name}/resolve", resolve)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the ceiling server did not listen on port {port} within {timeout} s")


def ceiling_rows(args: argparse.Namespace) -> list[Row]:
    port = free_port()
    proc = mp.get_context("spawn").Process(target=ceiling_main, args=(port,), name="ceiling")
    proc.start()
    try:
        wait_listening(port)
        meter = CpuMeter({"service": [proc.pid or 0]})
        label = "ceiling: minimal aiohttp handler"
        return get_rows(label, args, f"http://127.0.0.1:{port}", meter)
    finally:
        proc.terminate()
        proc.join(timeout=10)


# --- the real service ---------------------------------------------------------------------


def resolve_load(args: argparse.Namespace, base_url: str) -> Load:
    return Load("resolve", base_url, AB, args.concurrency, args.warmup, args.seconds)


@contextmanager
def service_on(url: str, tmp: Path) -> Iterator[ServiceProcess]:
    """A migrated database and one healthy `prompt-worker run` on it, with the prompts."""
    engine = create_db_engine(url)
    migrate(engine)
    engine.dispose()
    probe = Load("ingest", "", AB, 1, 0, 1, batch=BATCH)
    max_body = max(DEFAULT_MAX_BODY, max(len(b) for b in batch_bodies(probe)) + 4096)
    service = start_service(
        url,
        tmp,
        ADMIN_TOKEN=ADMIN,
        INGEST_TOKEN=INGEST,
        APP_RATE_LIMIT_PER_SECOND="0",
        MAX_BODY_BYTES=str(max_body),
        PATTERN_ANALYSIS_CRON=NEVER,
        MONITORING_CRON=NEVER,
    )
    try:
        service.wait_healthy(timeout=60)
        yield service
    finally:
        service.terminate()


def sqlite_rows(args: argparse.Namespace, tmp: Path) -> list[Row]:
    with service_on(f"sqlite:///{tmp / 'hotpath.db'}", tmp) as service:
        set_up_prompts(service)
        meter = CpuMeter({"service": [service.proc.pid]})
        return get_rows("server resolve, SQLite", args, service.base_url, meter)


def postgres_rows(args: argparse.Namespace, cluster: PgCluster, tmp: Path) -> list[Row]:
    rows = []
    with service_on(cluster.url, tmp) as service:
        experiment_id, arms = set_up_prompts(service)
        meter = CpuMeter(
            {"service": [service.proc.pid]}, trees={"postgres": postmaster_pid(cluster.datadir)}
        )
        rows += get_rows("server resolve, PostgreSQL", args, service.base_url, meter)
        ingest = Load(
            "ingest",
            service.base_url,
            AB,
            args.concurrency,
            args.warmup,
            args.seconds,
            batch=BATCH,
            experiment_id=experiment_id,
            arms=arms,
        )
        phase = run_phase("ingest pg", ingest, meter)
        rows.append(
            http_row(f"service ingest, PostgreSQL (batch {BATCH})", phase.result, phase.cpu, BATCH)
        )
        rows.append(Row(**get_prompt_row(service.base_url, INGEST, AB)))
        rows.append(Row(**log_row(service.base_url, INGEST, AB, cluster.url)))
    return rows + copy_rows(args, cluster)


# --- raw COPY -----------------------------------------------------------------------------

BARE = "hotpath_bare_conversations"


def psycopg_dsn(url: str) -> str:
    parts = make_url(url)
    return f"host={parts.host} port={parts.port} user={parts.username} dbname={parts.database}"


def stored_block(conn: psycopg.Connection[Any], columns: str, block: int) -> bytes:
    """`block` rows as COPY text: the conversations the service stored, repeated if it
    stored fewer."""
    query = f"COPY (SELECT {columns} FROM conversations ORDER BY id LIMIT {block}) TO STDOUT"
    with conn.cursor() as cur, cur.copy(query) as copy:
        lines = b"".join(bytes(data) for data in copy).splitlines(keepends=True)
    if not lines:
        raise RuntimeError("the service stored no conversations to copy")
    return b"".join(lines[i % len(lines)] for i in range(block))


def copy_for(
    conn: psycopg.Connection[Any], statement: str, data: bytes, seconds: float
) -> tuple[list[float], float]:
    """COPY the block again and again for `seconds`, one commit each, written as one
    buffer (no per-row Python): each statement's time in ms, and the seconds they took in
    all (the last one ends past `seconds`; a large block is a large share of the window)."""
    latencies: list[float] = []
    start = time.perf_counter()
    end = start + seconds
    while (now := time.perf_counter()) < end:
        with conn.cursor() as cur, cur.copy(statement) as copy:
            copy.write(data)
        conn.commit()
        latencies.append((time.perf_counter() - now) * 1000)
    return latencies, time.perf_counter() - start


def copy_rows(args: argparse.Namespace, cluster: PgCluster) -> list[Row]:
    columns = ", ".join(COLUMNS)
    with psycopg.connect(psycopg_dsn(cluster.url)) as conn:
        data = stored_block(conn, columns, args.copy_block)
        conn.execute(f"CREATE TABLE {BARE} (LIKE conversations INCLUDING DEFAULTS)")
        conn.commit()
        try:
            return [copy_row(args, cluster, conn, table, data) for table in ("conversations", BARE)]
        finally:
            conn.rollback()
            conn.execute(f"DROP TABLE {BARE}")
            conn.commit()


def copy_row(
    args: argparse.Namespace,
    cluster: PgCluster,
    conn: psycopg.Connection[Any],
    table: str,
    data: bytes,
) -> Row:
    """The rate of COPY into `table`: statements/s and rows/s."""
    meter = CpuMeter({"client": [os.getpid()]}, trees={"postgres": postmaster_pid(cluster.datadir)})
    statement = f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN"
    copy_for(conn, statement, data, args.warmup)
    meter.start()
    latencies, elapsed = copy_for(conn, statement, data, args.seconds)
    cpu = meter.stop()
    rate = len(latencies) / elapsed
    into = "conversations" if table == "conversations" else "bare table"
    label = f"raw COPY into {into}, {args.copy_block:,} rows/COPY"
    row = Row(label, rate, rate * args.copy_block, 0.0, 0.0, 0)
    row.p50, row.p99 = pct(latencies, 50), pct(latencies, 99)
    row.cpu = (
        f"PostgreSQL {cpu['postgres']:.0%}, client {cpu['client']:.0%}, other {other(cpu):.0%}"
    )
    return row


# --- the SDK, once it exists --------------------------------------------------------------


# --- the report ---------------------------------------------------------------------------


def find(rows: list[Row], prefix: str, tag: str = "") -> Row | None:
    """The row whose label starts with `prefix` and ends with the generator's `tag`."""
    return next(
        (
            row
            for row in rows
            if row.label.startswith(prefix)
            and (row.label.endswith(tag) if tag else "[" not in row.label)
        ),
        None,
    )


def print_ratios(rows: list[Row]) -> None:
    for tag in ("", " [wrk]"):  # each generator against its own ceiling
        ceiling = find(rows, "ceiling", tag)
        for prefix in ("server resolve, SQLite", "server resolve, PostgreSQL"):
            resolve = find(rows, prefix, tag)
            if ceiling and resolve and ceiling.rate:
                share = resolve.rate / ceiling.rate
                verdict = "meets" if share >= 0.5 and resolve.p99 < 2 else "misses"
                print(
                    f"{prefix}{tag} / ceiling: {share:.1%} of the req/s, p99 "
                    f"{resolve.p99:.2f} ms ({verdict} the aim: >= 50%, p99 < 2 ms)"
                )
    sdk = find(rows, "SDK get_prompt")
    if sdk and sdk.rate:
        per_call = 1e6 / sdk.rate
        verdict = "meets" if per_call <= 10 else "misses"
        print(f"SDK get_prompt: {per_call:.2f} us per call ({verdict} the aim: <= 10 us)")
    ingest = find(rows, "service ingest")
    copy, bare = find(rows, "raw COPY into conversations"), find(rows, "raw COPY into bare")
    if ingest and copy and copy.items:
        share = ingest.items / copy.items
        verdict = "meets" if share >= 0.25 else "misses"
        print(
            f"service ingest / raw COPY into conversations: {share:.1%} of the rows/s "
            f"({verdict} the aim: >= 25%)"
        )
    if ingest and bare and bare.items:
        print(
            f"service ingest / raw COPY into the bare table: {ingest.items / bare.items:.1%} of "
            "the rows/s (that table skips the five foreign-key checks and the indexes every "
            "stored conversation pays)"
        )


def print_report(rows: list[Row], args: argparse.Namespace, load_before: float) -> None:
    print(
        f"Hot path on {os.cpu_count()} CPU cores (1-minute load average {load_before:.2f} "
        f"before the run); HTTP rows: one load generator process, {args.concurrency} "
        f"keep-alive connections on loopback, {args.warmup:g} s warm-up, {args.seconds:g} s "
        "measured"
    )
    print(f"{'row':<44} {'req/s':>8} {'conv/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  CPU")
    for row in rows:
        conv = f"{row.items:>8.0f}" if row.items else f"{'-':>8}"
        print(
            f"{row.label:<44} {row.rate:>8.0f} {conv} {row.p50:>8.2f} {row.p99:>8.2f} "
            f"{row.errors:>6}  {row.cpu}"
        )
    print_ratios(rows)
    print(f"1-minute load average after the run {os.getloadavg()[0]:.2f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds a row")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds a row")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    parser.add_argument(
        "--copy-block", type=int, default=5000, help="rows per COPY statement (raw COPY rows)"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.concurrency < 1 or args.warmup < 0 or args.copy_block < 1:
        parser.error(
            "--seconds, --concurrency and --copy-block must be positive, --warmup 0 or more"
        )
    return args


def with_postgres(args: argparse.Namespace, tmp: Path) -> list[Row]:
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        print(f"PostgreSQL could not start ({exc}); its rows are skipped")
        return []
    try:
        return postgres_rows(args, cluster, tmp)
    finally:
        cluster.destroy()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-hotpath-"))
    try:
        rows = [*ceiling_rows(args), *sqlite_rows(args, tmp)]
        rows += with_postgres(args, tmp)
    except BaseException:
        print(f"the services' logs are kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    print_report(rows, args, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
