"""Application API load: conversations ingested and resolves answered per second, with p99.

Starts a throwaway PostgreSQL, migrates it, starts one real `prompt-worker run` process on
loopback (the per-token rate limit off: APP_RATE_LIMIT_PER_SECOND=0) and creates through the
admin API a prompt without an experiment and one with a running two-arm experiment. A load
generator in a separate process (asyncio + aiohttp, several keep-alive connections, closed
loop: each connection sends its next request when the last one is answered) then runs:
- POST /v1/conversations, batches of 500 rows (each batch one all-or-nothing transaction),
  rows tagged with the experiment and its arms' versions the way the application sends them:
  conversations/s, requests/s and the p50/p99 latency of each request as the client saw it;
- GET /v1/prompts/{name}/resolve with random unit ids, for the prompt without an experiment
  and for the one with the running experiment (the sticky hashing path): requests/s, p50/p99.
Each phase warms up, then measures; the CPU used by the service, PostgreSQL, the load
generator and everything else on the machine during the measured window is printed as a
share of one core, so a saturated generator or a noisy machine shows. Afterwards the rows
in the table are counted against the 202 answers.

Usage: python -m benchmarks.ingest [--seconds 20] [--concurrency 4] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from sqlalchemy import text  # noqa: E402

from benchmarks._replicas import CpuMeter, postmaster_pid  # noqa: E402
from optimizer.assignment import pick_arm  # noqa: E402
from optimizer.db import create_db_engine, migrate  # noqa: E402
from optimizer.ingest import MAX_BATCH  # noqa: E402
from tests.support.pg import PgCluster, start_cluster  # noqa: E402
from tests.support.procs import ServiceProcess, start_service  # noqa: E402

ADMIN, INGEST = "bench-admin-token", "bench-ingest-token"
PLAIN, AB = "bench-plain", "bench-ab"  # prompts: without and with a running experiment
DEFAULT_MAX_BODY = 1_048_576
BODIES = 16  # distinct batch bodies, built before the clock starts and sent in turn
# Cron ticks that cannot fire during a run, so no scheduled job competes with the load.
NEVER = "0 0 1 1 *"
TRANSCRIPT = (
    "user: my invoice shows a charge I do not recognise, can you explain it? "
    "assistant: of course, let me look at the line items on your last invoice. "
)


@dataclass(frozen=True)
class Load:
    """What one load generator process does; picklable, so it crosses to the child."""

    kind: str  # "ingest" or "resolve"
    base_url: str
    prompt: str
    concurrency: int
    warmup: float
    seconds: float
    batch: int = 500
    experiment_id: int | None = None
    arms: tuple[tuple[int, float, int], ...] = ()  # (arm id, weight, version number)
    transcript_chars: int = 200
    seed: int = 1


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)  # answered inside the window
    window: float = 0.0
    rows_accepted: int = 0  # over the whole run, warm-up included
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    generator_cpu: float = 0.0  # share of one core inside the window
    roles: dict[str, int] = field(default_factory=dict)  # resolve: arm role -> answers


# --- the load generator (runs in its own process) -----------------------------------------


def batch_bodies(load: Load) -> list[bytes]:
    transcript = TRANSCRIPT * (load.transcript_chars // len(TRANSCRIPT) + 1)
    transcript = transcript[: load.transcript_chars]
    bodies = []
    slices = [(arm_id, weight) for arm_id, weight, _ in load.arms]
    versions = {arm_id: number for arm_id, _, number in load.arms}
    for b in range(BODIES):
        rows = []
        for i in range(load.batch):
            n = b * load.batch + i
            # the version resolve serves this unit, as the application sends it
            version = (
                versions[pick_arm(load.experiment_id, f"user-{n:08d}", slices)]
                if load.experiment_id is not None
                else 1
            )
            rows.append(
                {
                    "prompt": load.prompt,
                    "version": version,
                    "experiment_id": load.experiment_id,
                    "unit_id": f"user-{n:08d}",
                    "success": n % 10 < 3,
                    "rating": 1 + n % 5,
                    "latency_ms": 200.0 + n % 900,
                    "cost_usd": 0.0004 + (n % 7) / 10_000,
                    "input_tokens": 800 + n % 300,
                    "output_tokens": 120 + n % 200,
                    "segment": ("web", "app", "api")[n % 3],
                    "tags": ["billing"] if n % 4 == 0 else [],
                    "transcript": transcript,
                }
            )
        bodies.append(json.dumps({"conversations": rows}).encode())
    return bodies


def count_answer(result: LoadResult, kind: str, answer: dict[str, Any]) -> None:
    if kind == "ingest":
        result.rows_accepted += answer["accepted"]
    else:
        role = answer["arm"]["role"] if answer["arm"] else "no experiment"
        result.roles[role] = result.roles.get(role, 0) + 1


async def drive(load: Load, started: Event, ended: Event) -> LoadResult:
    result = LoadResult()
    headers = {"Authorization": f"Bearer {INGEST}", "Content-Type": "application/json"}
    bodies = batch_bodies(load) if load.kind == "ingest" else []
    rng = random.Random(load.seed)
    resolve_path = f"/v1/prompts/{load.prompt}/resolve?unit_id="
    connector = aiohttp.TCPConnector(limit=load.concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        load.base_url, connector=connector, headers=headers, timeout=timeout
    ) as session:
        begin = time.perf_counter()
        window_start = begin + load.warmup
        window_end = window_start + load.seconds

        def note_error(kind: str, detail: str) -> None:
            result.errors[kind] = result.errors.get(kind, 0) + 1
            result.first_error = result.first_error or detail[:300]

        async def one(k: int) -> None:
            try:
                if load.kind == "ingest":
                    ctx = session.post("/v1/conversations", data=bodies[k % BODIES])
                else:
                    ctx = session.get(f"{resolve_path}u-{rng.getrandbits(48):012x}")
                t0 = time.perf_counter()
                async with ctx as resp:
                    payload = await resp.read()
                t1 = time.perf_counter()
            except (aiohttp.ClientError, TimeoutError) as exc:
                note_error(type(exc).__name__, repr(exc))
                return
            if resp.status not in (200, 202):
                note_error(str(resp.status), payload.decode(errors="replace"))
                return
            count_answer(result, load.kind, json.loads(payload))
            if window_start <= t1 <= window_end:
                result.latencies_ms.append((t1 - t0) * 1000)

        async def connection(index: int) -> None:
            k = index
            while time.perf_counter() < window_end:
                await one(k)
                k += load.concurrency

        async def clock() -> None:
            await asyncio.sleep(window_start - time.perf_counter())
            cpu0 = time.process_time()
            started.set()
            await asyncio.sleep(window_end - time.perf_counter())
            result.generator_cpu = (time.process_time() - cpu0) / load.seconds
            ended.set()

        await asyncio.gather(clock(), *(connection(i) for i in range(load.concurrency)))
    result.window = load.seconds
    return result


def generator_main(load: Load, started: Event, ended: Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    out.put(asyncio.run(drive(load, started, ended)))


# --- the orchestration (this process) -----------------------------------------------------


@dataclass
class Phase:
    label: str
    result: LoadResult
    cpu: dict[str, float]
    rows_per_request: int = 0


def run_phase(label: str, load: Load, meter: CpuMeter) -> Phase:
    ctx = mp.get_context("spawn")
    started, ended, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(
        target=generator_main, args=(load, started, ended, out), name=f"loadgen-{load.kind}"
    )
    proc.start()
    meter.pids["generator"] = [proc.pid or 0]
    limit = 120 + load.warmup
    if not started.wait(timeout=limit):
        proc.kill()
        raise RuntimeError(f"{label}: the load generator did not start within {limit:.0f} s")
    meter.start()
    if not ended.wait(timeout=load.seconds + 60):
        proc.kill()
        raise RuntimeError(f"{label}: the load generator did not finish its window")
    shares = meter.stop()
    result: LoadResult = out.get(timeout=120)
    proc.join(timeout=30)
    rows = load.batch if load.kind == "ingest" else 0
    return Phase(label, result, shares, rows)


def admin(service: ServiceProcess, method: str, path: str, body: Any) -> Any:
    code, answer = service.request(method, path, body, ADMIN)
    if code not in (200, 201):
        raise RuntimeError(f"{method} {path} answered {code}: {answer}")
    return answer


def set_up_prompts(service: ServiceProcess) -> tuple[int, tuple[tuple[int, float, int], ...]]:
    """The two prompts, and the running experiment on AB (control v1 against v2): its id and
    arms."""
    admin(service, "POST", "/prompts", {"name": PLAIN, "content": "You are a support bot."})
    admin(service, "POST", "/prompts", {"name": AB, "content": "You are a support bot."})
    admin(
        service,
        "POST",
        f"/prompts/{AB}/versions",
        {"content": "You are a concise, friendly support bot."},
    )
    experiment = admin(service, "POST", "/experiments", {"prompt": AB, "variants": [2]})
    arms = tuple((int(a["id"]), float(a["weight"]), int(a["version"])) for a in experiment["arms"])
    return int(experiment["id"]), arms


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def other(cpu: dict[str, float]) -> float:
    """CPU the rest of the machine used: anything above a few % means a noisy run."""
    return max(cpu["machine"] - cpu["service"] - cpu["postgres"] - cpu["generator"], 0.0)


def print_report(
    phases: list[Phase],
    args: argparse.Namespace,
    stored: int,
    accepted: int,
    server: str,
    load_before: float,
) -> None:
    print(
        f"Application API load on {os.cpu_count()} CPU cores (1-minute load average "
        f"{load_before:.2f} before the run): one `prompt-worker run` "
        f"(WORKER_CONCURRENCY default, rate limit off) on a throwaway {server}"
    )
    print(
        f"load generator: 1 separate process (asyncio + aiohttp), {args.concurrency} "
        f"keep-alive connections on loopback, closed loop; {args.warmup:g} s warm-up, "
        f"{args.seconds:g} s measured for ingest, {args.resolve_seconds:g} s per resolve row"
    )
    print(
        f"{'phase':<42} {'req/s':>8} {'conv/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6}   CPU % of one core: service / PostgreSQL / generator / other"
    )
    for phase in phases:
        r = phase.result
        rate = len(r.latencies_ms) / r.window
        conv = f"{rate * phase.rows_per_request:>8.0f}" if phase.rows_per_request else f"{'-':>8}"
        cpu = phase.cpu
        print(
            f"{phase.label:<42} {rate:>8.0f} {conv} {pct(r.latencies_ms, 50):>8.1f} "
            f"{pct(r.latencies_ms, 99):>8.1f} {sum(r.errors.values()):>6}   "
            f"{cpu['service'] * 100:>5.0f} / {cpu['postgres'] * 100:>4.0f} / "
            f"{cpu['generator'] * 100:>4.0f} / {other(cpu) * 100:>4.0f}"
        )
        if r.errors:
            print(f"    errors {r.errors}; first: {r.first_error}")
        if r.roles and "no experiment" not in r.roles:
            total = sum(r.roles.values())
            split = ", ".join(f"{role} {n / total:.1%}" for role, n in sorted(r.roles.items()))
            print(f"    arms answered: {split} of {total:,}")
    if accepted:
        verdict = "matches" if stored == accepted else "DOES NOT MATCH"
        print(
            f"rows stored: {stored:,}; {verdict} the {accepted:,} accepted in 202 answers "
            "(warm-up included)"
        )
    print(
        f"latency = client-observed time of each request, send to last byte; the "
        f"generator shares the {os.cpu_count()} cores with the service and PostgreSQL, so "
        "its CPU share above is what it took from them; other = every other process on "
        "the machine"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Needs PostgreSQL server binaries (initdb, pg_ctl); when run as root, the server "
        "runs as the postgres user.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="measured seconds of the ingest phase (default 20)",
    )
    parser.add_argument(
        "--resolve-seconds",
        type=float,
        default=10.0,
        help="measured seconds of each resolve phase (default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of load before each measurement starts (default 2)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="concurrent connections (requests in flight) (default 4)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=500,
        help=f"conversations per POST, 1..{MAX_BATCH} (default 500)",
    )
    parser.add_argument(
        "--transcript-chars",
        type=int,
        default=200,
        help="length of each row's transcript (default 200)",
    )
    parser.add_argument("--skip-ingest", action="store_true", help="skip the ingest phase")
    parser.add_argument("--skip-resolve", action="store_true", help="skip both resolve phases")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="the service's LOG_LEVEL (default INFO, as in production)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must be 1..{MAX_BATCH}: the API refuses larger batches")
    if args.concurrency < 1 or args.seconds <= 0 or args.resolve_seconds <= 0:
        parser.error("--concurrency, --seconds and --resolve-seconds must be positive")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.skip_ingest and args.skip_resolve:
        parser.error("--skip-ingest and --skip-resolve together leave nothing to measure")
    return args


def run_phases(
    args: argparse.Namespace, cluster: PgCluster, tmp: Path
) -> tuple[list[Phase], int, str]:
    """The phases against one fresh service; returns them, the rows stored and the server."""
    probe = Load(
        "ingest", "", AB, 1, 0, 1, batch=args.batch, transcript_chars=args.transcript_chars
    )
    max_body = max(DEFAULT_MAX_BODY, max(len(b) for b in batch_bodies(probe)) + 4096)
    engine = create_db_engine(cluster.url)
    migrate(engine)
    with engine.connect() as conn:
        server = " ".join(str(conn.execute(text("SELECT version()")).scalar()).split()[:2])
    service = start_service(
        cluster.url,
        tmp,
        ADMIN_TOKEN=ADMIN,
        INGEST_TOKEN=INGEST,
        APP_RATE_LIMIT_PER_SECOND="0",
        MAX_BODY_BYTES=str(max_body),
        PATTERN_ANALYSIS_CRON=NEVER,
        MONITORING_CRON=NEVER,
        LOG_LEVEL=args.log_level,
    )
    try:
        service.wait_healthy(timeout=60)
        experiment_id, arms = set_up_prompts(service)
        meter = CpuMeter(
            {"service": [service.proc.pid]}, trees={"postgres": postmaster_pid(cluster.datadir)}
        )
        common: dict[str, Any] = {
            "base_url": service.base_url,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
        }
        phases = []
        if not args.skip_ingest:
            phases.append(
                run_phase(
                    f"POST /v1/conversations (batch {args.batch})",
                    Load(
                        "ingest",
                        prompt=AB,
                        seconds=args.seconds,
                        batch=args.batch,
                        experiment_id=experiment_id,
                        arms=arms,
                        transcript_chars=args.transcript_chars,
                        **common,
                    ),
                    meter,
                )
            )
        if not args.skip_resolve:
            for label, prompt in (
                ("GET resolve, no experiment", PLAIN),
                ("GET resolve, running experiment (2 arms)", AB),
            ):
                phases.append(
                    run_phase(
                        label,
                        Load("resolve", prompt=prompt, seconds=args.resolve_seconds, **common),
                        meter,
                    )
                )
    finally:
        service.terminate()
    with engine.connect() as conn:
        stored = int(conn.execute(text("SELECT count(*) FROM conversations")).scalar() or 0)
    engine.dispose()
    return phases, stored, server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    cluster = start_cluster()
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-ingest-"))
    try:
        phases, stored, server = run_phases(args, cluster, tmp)
    except BaseException:
        print(f"the service's log is kept in {tmp}", file=sys.stderr)
        raise
    finally:
        cluster.destroy()
    shutil.rmtree(tmp, ignore_errors=True)
    print_report(
        phases, args, stored, sum(p.result.rows_accepted for p in phases), server, load_before
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
