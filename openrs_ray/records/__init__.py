"""What a run leaves on disk: checkpoints, run log, summary, trackers, provenance."""
