"""fleetd's Prometheus metrics: the metric objects, on one registry served at ``/metrics``.

Only shells touch these (the engine and agent loops, the etcd adapter); the pure core never does. They live
on ``REGISTRY`` rather than prometheus_client's global one, so ``/metrics`` shows fleetd's metrics only
(plus the process collector) and tests read values with ``REGISTRY.get_sample_value``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "AGENT_TASKS",
    "AGENT_UNITS",
    "ENGINE_LEADER",
    "ENGINE_PASSES",
    "ENGINE_PASS_SECONDS",
    "ENGINE_PLACEMENTS",
    "ENGINE_UNPLACEABLE",
    "ENGINE_WATCH_LAG",
    "ETCD_REQUEST_ERRORS",
    "ETCD_REQUEST_SECONDS",
    "LEASE_KEEPALIVE_LAG",
    "REGISTRY",
    "observe_etcd_request",
]

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

ENGINE_PASSES = Counter(
    "fleet_engine_passes", "Engine reconcile passes run as leader, by result (ok, conflict, error).",
    ["result"], registry=REGISTRY,
)
ENGINE_PASS_SECONDS = Histogram(
    "fleet_engine_pass_duration_seconds", "Duration of engine reconcile passes.", registry=REGISTRY,
)
ENGINE_PLACEMENTS = Counter(
    "fleet_engine_placements", "Schedule changes applied by the engine, by action (schedule, unschedule).",
    ["action"], registry=REGISTRY,
)
ENGINE_UNPLACEABLE = Gauge(
    "fleet_engine_unplaceable_units",
    "Units the engine found no machine for in its last pass, by reason (peer, machine_id, metadata, refused,"
    " moves, cap, cordoned, cap_or_cordoned, no_machines).",
    ["reason"], registry=REGISTRY,
)
ENGINE_WATCH_LAG = Histogram(
    "fleet_engine_watch_lag_seconds",
    "Seconds from the leader's schedule write until its own watch delivered it to its registry copy.",
    registry=REGISTRY,
)
ENGINE_LEADER = Gauge(
    "fleet_engine_leader", "1 while this fleetd's engine is the leader, else 0.", registry=REGISTRY,
)
AGENT_TASKS = Counter(
    "fleet_agent_tasks", "Tasks the agent ran against systemd, by kind and result (ok, error).",
    ["kind", "result"], registry=REGISTRY,
)
AGENT_UNITS = Gauge(
    "fleet_agent_units", "Units this machine's agent has applied, by fleet state (loaded, launched).",
    ["state"], registry=REGISTRY,
)
ETCD_REQUEST_SECONDS = Histogram(
    "fleet_etcd_request_duration_seconds", "Latency of etcd requests, by method.", ["method"],
    registry=REGISTRY,
)
ETCD_REQUEST_ERRORS = Counter(
    "fleet_etcd_request_errors", "etcd requests that failed, by method.", ["method"], registry=REGISTRY,
)
LEASE_KEEPALIVE_LAG = Gauge(
    "fleet_lease_keepalive_lag_seconds",
    "Seconds the agent's last lease keep-alive came after it was due (0 when on time).",
    registry=REGISTRY,
)


def observe_etcd_request(method: str, seconds: float, failed: bool) -> None:
    """The etcd adapter's request observer (``EtcdKV(observe=...)``): latency and errors by method."""
    if failed:
        ETCD_REQUEST_ERRORS.labels(method).inc()
    ETCD_REQUEST_SECONDS.labels(method).observe(seconds)
