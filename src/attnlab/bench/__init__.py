"""The benchmark behind `scripts/benchmark.py` and docs/benchmark.md, in three parts:

- `contestants`: what is timed. Per training step: the seeds' hand-written loop, a template
  Lightning recipe and attnlab's own path. Whole processes: `python scripts/train.py` (one run, or a
  study with `-m`) against `replay`, the same trainings written by hand in one process.
- `measure`: how. Each measurement runs in a fresh process (`python -m attnlab.bench`), so that its
  memory peak is its own and a crash or out-of-memory becomes a table cell; whole processes are timed
  by the wall clock, contestants taking turns round after round, because this machine's speed drifts.
- `table`: the markdown of docs/benchmark.md.
"""
