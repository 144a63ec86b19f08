"""Speed of attnlab against the same work written by hand: `python scripts/benchmark.py --help` (attnlab.bench)."""

from attnlab.bench import main

main()
