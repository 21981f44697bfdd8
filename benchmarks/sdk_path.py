"""The client SDK on the application's side of the hot path: get_prompt per call, and log end
to end into PostgreSQL through the service.

- get_prompt_row: a Client loads the configuration from a live service over HTTP, then
  get_prompt is called in a loop on the prompt with a running experiment (the hashing path)
  for distinct unit ids; calls/s from an untimed loop, p50/p99 from individually timed calls
  (perf_counter_ns, so they include the timer's own ~0.1 us).
- log_row: conversations served by get_prompt are logged as fast as the caller can, and the
  Client delivers them in batches; the clock stops when flush() returns, that is when the
  service has answered 202 for every batch (it commits before it answers). The rows are then
  counted in the database. Batches/s is the row's rate, conversations/s its items, p50/p99
  those of the log() call itself (the cost the application sees).

benchmarks/hotpath.py turns the dicts into its Row(**row). Run alone (a throwaway PostgreSQL,
one `prompt-worker run`): python -m benchmarks.sdk_path [--calls 200000] [--conversations 100000]
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from prompt_worker_client import Client  # noqa: E402
from sqlalchemy import text  # noqa: E402

from optimizer.db import create_db_engine  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else 0.0


def _ready_client(base_url: str, token: str, **options: Any) -> Client:
    client = Client(base_url, token, init_timeout=60, close_timeout=600, **options)
    if not client.ready:
        client.close()
        raise RuntimeError(f"no configuration from {base_url}: {client.stats}")
    return client


def get_prompt_row(
    base_url: str, token: str, prompt: str, *, calls: int = 200_000, units: int = 10_000
) -> dict[str, Any]:
    """Row fields for SDK get_prompt: rate = calls/s; p50/p99 in ms (x1000 for us)."""
    with _ready_client(base_url, token) as client:
        ids = [f"user-{i}" for i in range(units)]
        get = client.get_prompt
        for unit in ids:  # warm-up
            get(prompt, unit)
        started = time.perf_counter()
        for i in range(calls):
            get(prompt, ids[i % units])
        rate = calls / (time.perf_counter() - started)
        timed = []
        clock = time.perf_counter_ns
        for i in range(min(calls, 100_000)):
            unit = ids[i % units]
            before = clock()
            get(prompt, unit)
            timed.append((clock() - before) / 1e6)
        errors = client.stats.fallbacks_served
    return {
        "label": f"SDK get_prompt ({1e6 / rate:.1f} us/call)",
        "rate": rate,
        "items": 0.0,
        "p50": _pct(timed, 50),
        "p99": _pct(timed, 99),
        "errors": errors,
        "cpu": "in-process, 1 thread",
    }


def _stored(database_url: str) -> int:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM conversations")).scalar_one())
    finally:
        engine.dispose()


def log_row(
    base_url: str,
    token: str,
    prompt: str,
    database_url: str,
    *,
    conversations: int = 100_000,
    batch_size: int = 500,
) -> dict[str, Any]:
    """Row fields for SDK log end to end: rate = batches/s, items = conversations/s until all
    are stored; p50/p99 of the log() call in ms. `database_url` is the service's database,
    counted before and after (errors: conversations missing, dropped or refused)."""
    before = _stored(database_url)
    # Room for every conversation: the caller outpaces delivery here, and a drop would make
    # the figure meaningless (a real application logs at its traffic's pace).
    with _ready_client(
        base_url, token, batch_size=batch_size, max_buffered=conversations + batch_size
    ) as client:
        records = []
        for i in range(conversations):
            unit = f"log-user-{i}"
            served = client.get_prompt(prompt, unit)
            records.append(
                {**served.log_fields(), "unit_id": unit, "success": i % 3 != 0, "rating": 4}
            )
        timed = []
        clock = time.perf_counter_ns
        started = time.perf_counter()
        for record in records:
            at = clock()
            client.log(record)
            timed.append((clock() - at) / 1e6)
        delivered = client.flush(timeout=600)
        elapsed = time.perf_counter() - started
        stats = client.stats
    stored = _stored(database_url) - before
    missing = conversations - stored
    if not delivered or missing:
        print(f"  SDK log: flush {'completed' if delivered else 'timed out'}, {stats}")
    return {
        "label": f"SDK log end to end, PostgreSQL (batch {batch_size})",
        "rate": stats.batches_sent / elapsed,
        "items": stored / elapsed,
        "p50": _pct(timed, 50),
        "p99": _pct(timed, 99),
        "errors": max(missing, 0) + stats.dropped_rejected + stats.dropped_overflow,
        "cpu": "client in-process; delivery: 1 background thread",
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.hotpath import service_on
    from benchmarks.ingest import AB, INGEST, set_up_prompts
    from tests.support.pg import start_cluster

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--conversations", type=int, default=100_000)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-sdk-"))
    cluster = start_cluster()
    try:
        with service_on(cluster.url, tmp) as service:
            set_up_prompts(service)
            rows = [
                get_prompt_row(service.base_url, INGEST, AB, calls=args.calls),
                log_row(
                    service.base_url, INGEST, AB, cluster.url, conversations=args.conversations
                ),
            ]
    finally:
        cluster.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'row':<44} {'rate/s':>9} {'conv/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'errors':>6}")
    for row in rows:
        print(
            f"{row['label']:<44} {row['rate']:>9.0f} {row['items']:>8.0f} "
            f"{row['p50']:>9.4f} {row['p99']:>9.4f} {row['errors']:>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
