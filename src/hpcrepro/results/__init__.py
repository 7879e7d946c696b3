"""Results: MLLOG parsing, compliance, RCP, the official score, reports, plots, submission trees.

Public entry points: `runs.summarize_run`, `runs.progress`, `score.score_runs`, `rcp.check`,
`collect.collect`; see docs/results.md.
"""
