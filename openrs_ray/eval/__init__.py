"""Evaluation: benchmarks by name, pass@1 / avg@k / unbiased pass@k on the generator actors and verifier pool.

metrics.py     pure estimators (no Ray, no model)
benchmarks.py  benchmark names → hub dataset or local file → problems with gold answers
runner.py      Evaluator (one evaluation), BestTracker (best.json), EvalHook (evaluation while training)
report.py      the results as JSON and a markdown table
cli.py         `openrs-ray eval CONFIG`
"""
