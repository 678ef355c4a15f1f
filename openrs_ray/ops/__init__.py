"""Operating a live run: Prometheus metrics, cost meter, control actor."""
