"""From a run to reports: results, verdicts, baselines, perf.csv rows, summaries, the manifest.

Nothing here imports pytest: the top level alone wires these into hooks and fixtures.
"""
