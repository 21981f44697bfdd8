"""The application's hot path side by side: resolve against a ceiling, ingest against COPY.

HTTP rows run closed-loop on keep-alive connections on loopback, after a warm-up, for a
fixed number of seconds. With two cores or more every server is pinned to core 0 and the
load generator to the others, so the two never share a core by chance.
- ceiling: a minimal aiohttp handler in its own process, on the service's event loop (uvloop
  where installed), a bearer check and a resolve-shaped JSON answer from memory; the most
  an aiohttp server answers on this machine;
- server resolve, GET /v1/prompts/{name}/resolve?unit_id=... (another unit each request)
  with a running two-arm experiment, against a real `prompt-worker run` on SQLite and on a
  throwaway PostgreSQL. These GET rows use wrk (one thread; `apt-get install wrk`), or the
  Python generator below when wrk is missing (it needs a core of its own, so figures are a
  floor); --rounds rounds over the three (all three servers up meanwhile, so a noisy
  minute falls on all of them alike), the median of each figure reported;
- service ingest, POST /v1/conversations in batches of 500 into PostgreSQL, with
  benchmarks.ingest's generator (a separate process, asyncio + aiohttp);
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
                                    [--rounds 3] [--copy-block 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import socket
import statistics
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
from optimizer.service import new_event_loop  # noqa: E402
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
    row = Row(label, rate, rate * batch, pct(lat, 50), pct(lat, 99), sum(result.errors.values()))
    row.cpu = cpu_text(cpu)
    if result.errors:
        print(f"  {label}: errors {result.errors}; first: {result.first_error}")
    return row


# --- the GET rows: pinned, in rounds ----------------------------------------------------

# With two cores or more, every server runs on SERVER_CPUS and the load generator on the
# others: left to the scheduler, a generator sometimes shares the server's core, and a
# row's throughput then moves by a third from one run to the next.
SERVER_CPUS = {0}


def generator_cpus() -> set[int] | None:
    cpus = os.sched_getaffinity(0) - SERVER_CPUS
    return cpus if cpus and os.sched_getaffinity(0) >= SERVER_CPUS else None


def pin_server(pid: int) -> None:
    """Every thread of `pid` on SERVER_CPUS (threads it starts later inherit it)."""
    if generator_cpus() is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), SERVER_CPUS)


def _pin_generator() -> None:
    cpus = generator_cpus()
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


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


def _wrk(command: list[str], seconds: float) -> tuple[str, float]:
    """Run wrk for `seconds` on the generator's cores: its output and the CPU seconds it
    used (from the kernel's account of the exited child)."""
    proc = subprocess.Popen(
        [command[0], f"-d{seconds:g}s", *command[1:]],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_pin_generator,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
    return out, usage.ru_utime + usage.ru_stime


def wrk_row(label: str, args: argparse.Namespace, base_url: str, meter: CpuMeter) -> Row:
    """`args.seconds` of wrk (one thread, `args.concurrency` keep-alive connections) after a
    warm-up run; latencies from wrk's own --latency distribution."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (INGEST, AB))
    url = f"{base_url}/v1/prompts/{AB}/resolve"
    command = ["wrk", "-t1", f"-c{args.concurrency}", "--latency", "-s", script.name, url]
    try:
        if args.warmup:
            _wrk(command, args.warmup)
        meter.pids.pop("generator", None)
        meter.start()
        started = time.perf_counter()
        out, cpu_seconds = _wrk(command, args.seconds)
        shares = meter.stop()
        shares["generator"] = cpu_seconds / (time.perf_counter() - started)
    finally:
        os.unlink(script.name)
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
    row = Row(label, rate, 0.0, p50, p99, errors)
    row.cpu = cpu_text(shares)
    return row


def python_row(label: str, args: argparse.Namespace, base_url: str, meter: CpuMeter) -> Row:
    """The same with the Python load generator (when wrk is not installed): it needs a core
    of its own to keep up, so the server's figures are a floor."""
    load = Load("resolve", base_url, AB, args.concurrency, args.warmup, args.seconds)
    phase = run_phase(label, load, meter)
    return http_row(label, phase.result, phase.cpu)


def cpu_text(shares: dict[str, float]) -> str:
    text = f"server {shares['service']:.0%}, generator {shares['generator']:.0%}"
    if "postgres" in shares:
        text += f", PostgreSQL {shares['postgres']:.0%}"
    return text + f", other {other(shares):.0%}"


@dataclass
class Target:
    label: str
    base_url: str
    meter: CpuMeter


def get_rows(args: argparse.Namespace, targets: list[Target]) -> list[Row]:
    """`args.rounds` rounds over the targets, one row each per round, in a shuffled order
    (so a quiet or a noisy minute falls on all of them alike); per target the median of
    each figure."""
    measure = wrk_row if shutil.which("wrk") else python_row
    if measure is python_row:
        print("wrk is not installed (apt-get install wrk): GET rows use the Python generator")
    samples: dict[str, list[Row]] = {t.label: [] for t in targets}
    order = random.Random(1)
    for number in range(1, args.rounds + 1):
        done = []
        # Each round in another order: whatever a row leaves behind falls on all of them.
        for target in order.sample(targets, len(targets)):
            row = measure(target.label, args, target.base_url, target.meter)
            samples[target.label].append(row)
            name = target.label.split(",")[-1].strip()
            done.append(f"{name} {row.rate:,.0f}/s p99 {row.p99:.2f}")
        print(f"  round {number}: " + " | ".join(done), flush=True)
    rows = []
    for label, runs in samples.items():
        middle = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
        row = Row(
            f"{label} (median of {len(runs)})" if len(runs) > 1 else label,
            statistics.median(r.rate for r in runs),
            0.0,
            statistics.median(r.p50 for r in runs),
            statistics.median(r.p99 for r in runs),
            sum(r.errors for r in runs),
        )
        row.cpu = middle.cpu
        rows.append(row)
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
    # The service's own event loop (uvloop where installed): the same stack under both.
    loop = new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


def wait_listening(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the ceiling server did not listen on port {port} within {timeout} s")


@contextmanager
def ceiling_server() -> Iterator[Target]:
    port = free_port()
    proc = mp.get_context("spawn").Process(target=ceiling_main, args=(port,), name="ceiling")
    proc.start()
    try:
        wait_listening(port)
        pin_server(proc.pid or 0)
        meter = CpuMeter({"service": [proc.pid or 0]})
        yield Target("ceiling: minimal aiohttp handler", f"http://127.0.0.1:{port}", meter)
    finally:
        proc.terminate()
        proc.join(timeout=10)


# --- the real service ---------------------------------------------------------------------


@contextmanager
def service_on(url: str, tmp: Path) -> Iterator[ServiceProcess]:
    """A migrated database and one healthy `prompt-worker run` on it, with the prompts,
    pinned like the ceiling."""
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
        pin_server(service.proc.pid)
        yield service
    finally:
        service.terminate()


def resolve_target(label: str, service: ServiceProcess, cluster: PgCluster | None) -> Target:
    trees = {"postgres": postmaster_pid(cluster.datadir)} if cluster is not None else None
    return Target(label, service.base_url, CpuMeter({"service": [service.proc.pid]}, trees))


def postgres_rows(
    args: argparse.Namespace, cluster: PgCluster, service: ServiceProcess, experiment: Any
) -> list[Row]:
    """Ingest and the SDK into PostgreSQL, then raw COPY."""
    experiment_id, arms = experiment
    meter = CpuMeter(
        {"service": [service.proc.pid]}, trees={"postgres": postmaster_pid(cluster.datadir)}
    )
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
    return [
        http_row(f"service ingest, PostgreSQL (batch {BATCH})", phase.result, phase.cpu, BATCH),
        Row(**get_prompt_row(service.base_url, INGEST, AB)),
        Row(**log_row(service.base_url, INGEST, AB, cluster.url)),
    ]


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


def find(rows: list[Row], prefix: str) -> Row | None:
    return next((row for row in rows if row.label.startswith(prefix)), None)


def print_ratios(rows: list[Row]) -> None:
    ceiling = find(rows, "ceiling")
    for prefix in ("server resolve, SQLite", "server resolve, PostgreSQL"):
        resolve = find(rows, prefix)
        if ceiling and resolve and ceiling.rate:
            share = resolve.rate / ceiling.rate
            verdict = "meets" if share >= 0.5 and resolve.p99 < 2 else "misses"
            print(
                f"{prefix} / ceiling: {share:.1%} of the req/s, p99 {resolve.p99:.2f} ms "
                f"({verdict} the aim: >= 50%, p99 < 2 ms)"
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
        f"before the run); HTTP rows: {args.concurrency} keep-alive connections on "
        f"loopback, {args.warmup:g} s warm-up, {args.seconds:g} s measured; GET rows: "
        f"{'wrk' if shutil.which('wrk') else 'the Python generator'}, {args.rounds} rounds"
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
        "--rounds", type=int, default=3, help="rounds over the GET rows (median reported)"
    )
    parser.add_argument(
        "--copy-block", type=int, default=5000, help="rows per COPY statement (raw COPY rows)"
    )
    args = parser.parse_args(argv)
    if (
        args.seconds <= 0
        or min(args.concurrency, args.copy_block, args.rounds) < 1
        or args.warmup < 0
    ):
        parser.error(
            "--seconds, --concurrency, --rounds and --copy-block must be positive, "
            "--warmup 0 or more"
        )
    return args


def start_postgres() -> PgCluster | None:
    try:
        return start_cluster()
    except PostgresUnavailable as exc:
        print(f"PostgreSQL could not start ({exc}); its rows are skipped")
        return None


def measure_all(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> list[Row]:
    ceiling = stack.enter_context(ceiling_server())
    sqlite = stack.enter_context(service_on(f"sqlite:///{tmp / 'hotpath.db'}", tmp))
    set_up_prompts(sqlite)
    targets = [ceiling, resolve_target("server resolve, SQLite", sqlite, None)]
    cluster = start_postgres()
    if cluster is None:
        return get_rows(args, targets)
    stack.callback(cluster.destroy)
    pg = stack.enter_context(service_on(cluster.url, tmp))
    experiment = set_up_prompts(pg)
    targets.append(resolve_target("server resolve, PostgreSQL", pg, cluster))
    rows = get_rows(args, targets)
    rows += postgres_rows(args, cluster, pg, experiment)
    return rows + copy_rows(args, cluster)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-hotpath-"))
    try:
        with contextlib.ExitStack() as stack:
            rows = measure_all(args, tmp, stack)
    except BaseException:
        print(f"the services' logs are kept in {tmp}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    print_report(rows, args, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
