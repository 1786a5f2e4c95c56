"""``/metrics``: fleetd's metrics (``fleetd.metrics``) in the Prometheus text format, with the process
collector beside them. Loaded with the API, at the first request: recording never needs this library."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from fleetd import metrics

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Fleet(Collector):
    """Every family of ``fleetd.metrics.FAMILIES`` as it is at the scrape."""

    def collect(self) -> Iterator[Metric]:
        for family in metrics.FAMILIES:
            names = list(family.labelnames)
            if isinstance(family, metrics.Histogram):
                histogram = HistogramMetricFamily(family.name, family.documentation, labels=names)
                for labels, spread in family.values():
                    buckets = [
                        ("+Inf" if bound == float("inf") else repr(bound), float(count))
                        for bound, count in spread.cumulative()
                    ]
                    histogram.add_metric([labels[n] for n in names], buckets, spread.sum)
                yield histogram
                continue
            if isinstance(family, metrics.Counter):
                counter = CounterMetricFamily(family.name, family.documentation, labels=names)
                for labels, count in family.values():
                    counter.add_metric([labels[n] for n in names], count.value)
                yield counter
            elif isinstance(family, metrics.Gauge):
                gauge = GaugeMetricFamily(family.name, family.documentation, labels=names)
                for labels, level in family.values():
                    gauge.add_metric([labels[n] for n in names], level.value)
                yield gauge


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_Fleet())
    ProcessCollector(registry=registry)
    return registry


_REGISTRY = _registry()


def render() -> bytes:
    """The page served at ``/metrics``."""
    return generate_latest(_REGISTRY)
