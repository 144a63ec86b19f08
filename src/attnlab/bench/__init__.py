"""The benchmark behind `scripts/benchmark.py` and docs/benchmark.md: `contestants` (what is timed),
`measure` (how) and `table` (the markdown)."""
