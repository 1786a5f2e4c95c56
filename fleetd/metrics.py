"""fleetd's metrics: counters, gauges and histograms kept as plain numbers, served at ``/metrics``.

Only shells touch these (the engine and agent loops, the etcd adapter); the pure core never does. Recording
is a dict lookup and an addition, with nothing imported: a fleetd that is never scraped never loads the
exposition library. ``fleetd.api.exposition`` renders ``FAMILIES`` in the Prometheus text format (with
prometheus_client, plus its process collector) when ``/metrics`` is first asked for. Names follow
prometheus_client's conventions: a counter ``x`` is exposed as ``x_total``, a histogram as ``x_bucket``,
``x_sum`` and ``x_count``; ``sample`` reads one exposed value back (tests, tools).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = [
    "AGENT_TASKS",
    "AGENT_UNITS",
    "DEFAULT_BUCKETS",
    "ENGINE_LEADER",
    "ENGINE_PASSES",
    "ENGINE_PASS_SECONDS",
    "ENGINE_PLACEMENTS",
    "ENGINE_UNPLACEABLE",
    "ENGINE_WATCH_LAG",
    "ETCD_REQUEST_ERRORS",
    "ETCD_REQUEST_SECONDS",
    "FAMILIES",
    "LEASE_KEEPALIVE_LAG",
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "observe_etcd_request",
    "sample",
]

# Upper bounds of histogram buckets (seconds), prometheus_client's defaults; +Inf is implied.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class Count:
    """One counter's value (for one set of label values)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class Level:
    """One gauge's value."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)


class Spread:
    """One histogram's observations: a count per bucket (not cumulative), their sum and number."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(DEFAULT_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(DEFAULT_BUCKETS, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it) for each bucket, +Inf last."""
        total, out = 0, []
        for bound, count in zip((*DEFAULT_BUCKETS, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out


V = TypeVar("V", Count, Level, Spread)
Sample = tuple[str, dict[str, str], float]


class Family(Generic[V]):
    """A metric name with its help text and label names; one value per set of label values."""

    kind = ""

    def __init__(
        self, name: str, documentation: str, labelnames: tuple[str, ...], make: Callable[[], V]
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._make: Callable[[], V] = make
        self._values: dict[tuple[str, ...], V] = {} if labelnames else {(): make()}
        FAMILIES.append(self)

    def labels(self, *values: str) -> V:
        """The value for these label values (in ``labelnames`` order), made at first use."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        got = self._values.get(values)
        if got is None:
            got = self._values[values] = self._make()
        return got

    def values(self) -> list[tuple[dict[str, str], V]]:
        """(labels, value) of every set of label values used so far."""
        return [(dict(zip(self.labelnames, key, strict=True)), value) for key, value in self._values.items()]

    def samples(self) -> Iterator[Sample]:
        """The exposed samples: (name, labels, value)."""
        raise NotImplementedError


FAMILIES: list[Family[Count] | Family[Level] | Family[Spread]] = []


class Counter(Family[Count]):
    kind = "counter"

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        super().__init__(name, documentation, labelnames, Count)

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def samples(self) -> Iterator[Sample]:
        for labels, value in self.values():
            yield f"{self.name}_total", labels, value.value


class Gauge(Family[Level]):
    kind = "gauge"

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        super().__init__(name, documentation, labelnames, Level)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def samples(self) -> Iterator[Sample]:
        for labels, value in self.values():
            yield self.name, labels, value.value


class Histogram(Family[Spread]):
    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        super().__init__(name, documentation, labelnames, Spread)

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def samples(self) -> Iterator[Sample]:
        for labels, value in self.values():
            for bound, count in value.cumulative():
                le = "+Inf" if bound == float("inf") else repr(bound)
                yield f"{self.name}_bucket", {**labels, "le": le}, float(count)
            yield f"{self.name}_count", labels, float(value.count)
            yield f"{self.name}_sum", labels, value.sum


def sample(name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of one exposed sample (``fleet_agent_tasks_total`` with its labels), None if never set."""
    wanted = dict(labels or {})
    for family in FAMILIES:
        if name.startswith(family.name):
            for got, labels_of, value in family.samples():
                if got == name and labels_of == wanted:
                    return value
    return None


ENGINE_PASSES = Counter(
    "fleet_engine_passes", "Engine reconcile passes run as leader, by result (ok, conflict, error).",
    ("result",),
)
ENGINE_PASS_SECONDS = Histogram("fleet_engine_pass_duration_seconds", "Duration of engine reconcile passes.")
ENGINE_PLACEMENTS = Counter(
    "fleet_engine_placements", "Schedule changes applied by the engine, by action (schedule, unschedule).",
    ("action",),
)
ENGINE_UNPLACEABLE = Gauge(
    "fleet_engine_unplaceable_units",
    "Units the engine found no machine for in its last pass, by reason (peer, machine_id, metadata, refused,"
    " moves, cap, cordoned, cap_or_cordoned, no_machines).",
    ("reason",),
)
ENGINE_WATCH_LAG = Histogram(
    "fleet_engine_watch_lag_seconds",
    "Seconds from the leader's schedule write until its own watch delivered it to its registry copy.",
)
ENGINE_LEADER = Gauge("fleet_engine_leader", "1 while this fleetd's engine is the leader, else 0.")
AGENT_TASKS = Counter(
    "fleet_agent_tasks", "Tasks the agent ran against systemd, by kind and result (ok, error).",
    ("kind", "result"),
)
AGENT_UNITS = Gauge(
    "fleet_agent_units", "Units this machine's agent has applied, by fleet state (loaded, launched).",
    ("state",),
)
ETCD_REQUEST_SECONDS = Histogram(
    "fleet_etcd_request_duration_seconds", "Latency of etcd requests, by method.", ("method",)
)
ETCD_REQUEST_ERRORS = Counter(
    "fleet_etcd_request_errors", "etcd requests that failed, by method.", ("method",)
)
LEASE_KEEPALIVE_LAG = Gauge(
    "fleet_lease_keepalive_lag_seconds",
    "Seconds the agent's last lease keep-alive came after it was due (0 when on time).",
)


def observe_etcd_request(method: str, seconds: float, failed: bool) -> None:
    """The etcd adapter's request observer (``EtcdKV(observe=...)``): latency and errors by method."""
    if failed:
        ETCD_REQUEST_ERRORS.labels(method).inc()
    ETCD_REQUEST_SECONDS.labels(method).observe(seconds)
