"""The gateway's own metrics, in Prometheus' text format (GET /metrics), written with the page's
`Exposition` (web_status/metrics.py). Per process: each gateway of a spool is scraped apart; the
spool's own numbers (queues, workers, deployments) are in status/metrics.prom."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from cutor_spool.web_status.metrics import Exposition

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class GatewayMetrics:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (route, status)
    in_flight: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def observe(self, route: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        self.requests[(route, status)] += 1
        if route == "invoke":
            self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            self.latency_count += 1
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def text(self, waiting: int, direct: tuple[int, int] = (0, 0)) -> str:
        """`direct`: requests the direct path answered, and those it gave to the spool path."""
        out = Exposition()
        out.family(
            "cutor_gateway_requests_total",
            "counter",
            "HTTP requests answered, by route (invoke, describe, healthz, metrics) and status",
            [({"route": route, "status": status}, n) for (route, status), n in sorted(self.requests.items())],
        )
        out.family("cutor_gateway_in_flight", "gauge", "invocation requests being handled now", [({}, self.in_flight)])
        out.family("cutor_gateway_waiting", "gauge", "invocations waited for now", [({}, waiting)])
        out.family(
            "cutor_gateway_direct_total",
            "counter",
            "invocation requests by the direct path: answered by an executor's door, or given to the spool",
            [({"outcome": "answered"}, direct[0]), ({"outcome": "spool"}, direct[1])],
        )
        cumulative, samples = 0, []
        for bound, count in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            cumulative += count
            samples.append(({"le": "+Inf" if bound == float("inf") else repr(bound)}, cumulative))
        out.lines.append("# HELP cutor_gateway_invoke_seconds time from request to answer of invocations")
        out.lines.append("# TYPE cutor_gateway_invoke_seconds histogram")
        for labels, value in samples:
            out.lines.append(f'cutor_gateway_invoke_seconds_bucket{{le="{labels["le"]}"}} {value}')
        out.lines.append(f"cutor_gateway_invoke_seconds_sum {self.latency_sum!r}")
        out.lines.append(f"cutor_gateway_invoke_seconds_count {self.latency_count}")
        out.family("cutor_gateway_received_bytes_total", "counter", "request body bytes", [({}, self.bytes_in)])
        out.family("cutor_gateway_sent_bytes_total", "counter", "response body bytes", [({}, self.bytes_out)])
        return out.text()
