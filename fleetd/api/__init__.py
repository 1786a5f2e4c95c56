"""fleet's v1 HTTP API (``/fleet/v1``): units, unit states, machines, discovery, and ``/metrics``."""
