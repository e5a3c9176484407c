"""The server's Prometheus metrics, in a registry of its own (not the process-global one, so
two apps in one process, as in tests, do not collide)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

PREFIX = "tunefleet_serve"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Requests by route and status, their latency, the model's batch sizes, errors by kind,
    requests in flight, and model (re)loads."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "Requests answered.", ("route", "status"), registry=r
        )
        self.latency = Histogram(
            f"{PREFIX}_request_seconds",
            "Time from a request's arrival to its answer.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Texts per model call (requests arriving together share one).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            f"{PREFIX}_errors", "Refused or failed requests.", ("kind",), registry=r
        )
        self.in_flight = Gauge(f"{PREFIX}_in_flight", "Requests being answered now.", registry=r)
        self.loads = Counter(
            f"{PREFIX}_model_loads",
            "Models loaded and warmed, by outcome.",
            ("outcome",),
            registry=r,
        )
        self.ready = Gauge(f"{PREFIX}_ready", "1 once a model is loaded and warmed.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
