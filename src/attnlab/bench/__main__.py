"""Worker entry points of the benchmark (each in a fresh process):

python -m attnlab.bench step '<spec json>'     one per-step measurement; prints its result as JSON
python -m attnlab.bench replay <folder> [cuda] the trainings of a run or sweep folder, by hand
"""

import json
import sys

from attnlab.bench.contestants import replay
from attnlab.bench.measure import step_worker

if __name__ == "__main__":
    what, arg, *device = sys.argv[1:]
    if what not in ("step", "replay"):
        raise SystemExit(f"unknown worker {what!r}: step or replay")
    print(json.dumps(step_worker(json.loads(arg)) if what == "step" else replay(arg, *device)))
