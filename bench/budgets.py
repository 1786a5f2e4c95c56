"""Each benchmark's share of the full ``python -m bench`` run (they add up to 20 minutes on 2 cores; a run
takes about 19, since most finish inside their share), in seconds.

Estimated from full runs; engine_sweep, fanout and footprint read their own share here and cut their samples
(saying so in their figures) to stay inside it; the report prints how long each took.
"""

from __future__ import annotations

__all__ = ["BUDGETS"]

BUDGETS: dict[str, float] = {
    "planner": 20,
    "registry": 40,
    "tunnel": 10,
    "steady": 65,
    "start_latency": 15,
    "herd": 35,
    "fleetd_rss": 45,
    "engine_sweep": 100,
    "fleetctl": 60,  # 100 cold list-units processes (issue 15) and 40 warm calls
    "failover": 180,  # 30 kills, each waiting out an engine lease
    "failover_big": 85,  # 100,000 units filled, then up to 3 kills of real fleetd leaders
    "no_false_failover": 120,  # 10 etcd pauses or restarts of 5 s (issue 10)
    "fanout": 235,  # 20 runs of about 10 s after one warm-up
    "footprint": 190,  # 100,000 units on 5,000 machines (the target is 120 s), then 20 cold list-units
}
