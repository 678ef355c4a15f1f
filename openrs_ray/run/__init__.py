"""Drive stages: one stage from config to run folder (runner), stages chained (pipeline)."""
