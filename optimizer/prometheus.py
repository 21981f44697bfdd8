"""Prometheus metrics of one prompt-worker process.

Every value is per process: with several replicas, Prometheus scrapes each one and a query
sums them (`sum by (type, status) (rate(prompt_worker_jobs_total[5m]))`). Each Metrics
object owns its own CollectorRegistry, never the library's global one, so a process (or a
test) can build any number of services side by side.

Queue depth comes from the HealthMonitor's periodic database read, never from the scrape
itself: a scrape must answer at once even while the database is down or hangs, so it
serves the last values read and says with `prompt_worker_database_up` whether they are
current.

LLM calls are counted where they are recorded (optimizer.llm.usage.record_call), which has
no handle on the service; it finds this process's Metrics through a context variable that
the worker binds around every job (every LLM call is made by a job).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from optimizer.clock import utcnow

if TYPE_CHECKING:
    from optimizer.llm.usage import CallRecord
    from optimizer.runtime.queue import Job

# Jobs run from well under a second (monitoring, nothing to do) to the 45-minute timeout.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 2700, float("inf"))
# Pickup is one poll interval when idle, much longer when the queue backs up.
PICKUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf"))
TOKEN_KINDS = ("input", "output", "cache_write", "cache_read")


class QueueSource(Protocol):
    """What the HealthMonitor offers: its last report, read from memory only."""

    def report(self, now: datetime) -> dict[str, object]: ...


class _QueueCollector(Collector):
    """Reads the health snapshot at scrape time: no database access, cannot block."""

    def __init__(self) -> None:
        self.source: QueueSource | None = None
        self._seen_ok = False

    def collect(self) -> Iterable[GaugeMetricFamily]:
        if self.source is None:
            return []
        report = self.source.report(utcnow())
        database = report.get("database")
        up = bool(isinstance(database, dict) and database.get("ok"))
        self._seen_ok = self._seen_ok or up
        families = [
            GaugeMetricFamily(
                "prompt_worker_database_up",
                "1 when the last periodic database read succeeded and is fresh, else 0",
                value=1.0 if up else 0.0,
            )
        ]
        queue = report.get("queue")
        # Before the first successful read the snapshot holds placeholders, not counts:
        # better no series than a queue that looks empty.
        if self._seen_ok and isinstance(queue, dict):
            depth = GaugeMetricFamily(
                "prompt_worker_queue_depth",
                "Jobs by status at the last successful database read",
                labels=["status"],
            )
            for status, count in sorted(queue.items()):
                depth.add_metric([str(status)], float(count))
            families.append(depth)
        return families


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter(
            "prompt_worker_jobs",
            "Job attempts finished by this process, by "
            "outcome (completed, failed, retried, cancelled, deferred, "
            "released, lost)",
            ["type", "status"],
            registry=r,
        )
        self.job_duration = Histogram(
            "prompt_worker_job_duration_seconds",
            "Run time of one job attempt, any outcome",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.pickup_latency = Histogram(
            "prompt_worker_job_pickup_latency_seconds",
            "From when a job became due (max of created_at, run_after) to its claim",
            ["type"],
            buckets=PICKUP_BUCKETS,
            registry=r,
        )
        self.llm_calls = Counter(
            "prompt_worker_llm_calls",
            "LLM call attempts by outcome",
            ["model", "outcome"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "prompt_worker_llm_tokens",
            "LLM tokens by kind (input, output, cache_write, cache_read)",
            ["model", "kind"],
            registry=r,
        )
        self.llm_cost = Counter(
            "prompt_worker_llm_cost_usd", "LLM spend in US dollars", ["model"], registry=r
        )
        self.decisions = Counter(
            "prompt_worker_experiment_decisions",
            "Experiment checks by decision",
            ["decision"],
            registry=r,
        )
        self._queue = _QueueCollector()
        r.register(self._queue)

    def track_queue(self, source: QueueSource) -> None:
        """Serve queue depth and database_up from `source` (the HealthMonitor)."""
        self._queue.source = source

    # ---- observations -----------------------------------------------------------------

    def job_claimed(self, job: Job) -> None:
        if job.started_at is None:
            return
        due = max(job.created_at, job.run_after)
        self.pickup_latency.labels(job.type).observe(
            max(0.0, (job.started_at - due).total_seconds())
        )

    def job_finished(self, job_type: str, status: str, seconds: float) -> None:
        self.jobs.labels(job_type, status).inc()
        self.job_duration.labels(job_type).observe(max(0.0, seconds))

    def llm_call(self, record: CallRecord) -> None:
        model = record.model or record.requested_model
        self.llm_calls.labels(model, record.outcome).inc()
        tokens = (
            record.input_tokens,
            record.output_tokens,
            record.cache_creation_input_tokens,
            record.cache_read_input_tokens,
        )
        for kind, count in zip(TOKEN_KINDS, tokens, strict=True):
            if count > 0:
                self.llm_tokens.labels(model, kind).inc(count)
        if record.cost_usd > 0:
            self.llm_cost.labels(model).inc(record.cost_usd)

    def experiment_decision(self, decision: str) -> None:
        self.decisions.labels(decision).inc()


# ---- the process's Metrics for code that has no ServiceContext ---------------------------

_current: ContextVar[Metrics | None] = ContextVar("prompt_worker_metrics", default=None)


def current_metrics() -> Metrics | None:
    return _current.get()


@contextlib.contextmanager
def bound(metrics: Metrics | None) -> Iterator[None]:
    """Make `metrics` current for this task and the tasks and threads it starts (they copy
    the context when created)."""
    token = _current.set(metrics)
    try:
        yield
    finally:
        _current.reset(token)


def observe_llm_call(record: CallRecord) -> None:
    metrics = _current.get()
    if metrics is not None:
        metrics.llm_call(record)
