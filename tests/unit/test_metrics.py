"""fleetd.metrics: what recording keeps and how it is exposed (names, buckets, labels)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fleetd import metrics
from fleetd.api import exposition


@pytest.fixture(autouse=True)
def only_fleetds_families() -> Iterator[None]:
    """Families a test declares are dropped after it (every declared family is exposed)."""
    before = list(metrics.FAMILIES)
    yield
    metrics.FAMILIES[:] = before


def test_histogram_buckets_are_cumulative_upper_bounds() -> None:
    histogram = metrics.Histogram("test_spread_seconds", "A test histogram.", ("method",))
    for value in (0.001, 0.005, 0.0051, 0.3, 20.0):
        histogram.labels("get").observe(value)
    labels = {"method": "get"}
    assert metrics.sample("test_spread_seconds_bucket", {**labels, "le": "0.005"}) == 2  # <= is inclusive
    assert metrics.sample("test_spread_seconds_bucket", {**labels, "le": "0.01"}) == 3
    assert metrics.sample("test_spread_seconds_bucket", {**labels, "le": "0.5"}) == 4
    assert metrics.sample("test_spread_seconds_bucket", {**labels, "le": "10.0"}) == 4
    assert metrics.sample("test_spread_seconds_bucket", {**labels, "le": "+Inf"}) == 5
    assert metrics.sample("test_spread_seconds_count", labels) == 5
    assert metrics.sample("test_spread_seconds_sum", labels) == pytest.approx(20.3111)
    assert metrics.sample("test_spread_seconds_count", {"method": "put"}) is None


def test_counters_only_go_up_and_labels_must_match() -> None:
    counter = metrics.Counter("test_things", "Things.", ("kind", "result"))
    counter.labels("a", "ok").inc()
    counter.labels("a", "ok").inc(2)
    assert metrics.sample("test_things_total", {"kind": "a", "result": "ok"}) == 3
    with pytest.raises(ValueError, match="only goes up"):
        counter.labels("a", "ok").inc(-1)
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("a")
    gauge = metrics.Gauge("test_level", "A level.")
    gauge.set(4)
    gauge.set(1.5)
    assert metrics.sample("test_level") == 1.5


def test_exposition_is_prometheus_text() -> None:
    metrics.AGENT_TASKS.labels("stop", "error").inc()
    metrics.ETCD_REQUEST_SECONDS.labels("Range").observe(0.02)
    text = exposition.render().decode()
    assert "# TYPE fleet_agent_tasks_total counter" in text
    assert 'fleet_agent_tasks_total{kind="stop",result="error"}' in text
    assert "# TYPE fleet_etcd_request_duration_seconds histogram" in text
    assert 'fleet_etcd_request_duration_seconds_bucket{le="0.025",method="Range"}' in text
    assert "# TYPE fleet_engine_unplaceable_units gauge" in text  # declared before any value is set
    assert "process_resident_memory_bytes" in text  # the process collector
