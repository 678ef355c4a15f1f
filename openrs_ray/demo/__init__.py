"""Demo and test-only code: the tiny model, the synthetic arithmetic task, `prepare`."""
