"""Tables and plots of a sweep: python scripts/report.py outputs/multiruns/<sweep>"""

import atexit
import gc
import os
import sys
from pathlib import Path

from attnlab.errors import ArgumentParser, ConfigError, one_line, outlive_readers, stop_on_signals

stop_on_signals("each file of the report is whole, the old or the new; run it again for a report of the jobs now")

from attnlab.report import write_report  # noqa: E402  (a second of imports: after the signals' handling)

atexit.register(gc.freeze)  # a quicker exit: scripts/train.py says why
outlive_readers()  # `| head`: the report is written either way

parser = ArgumentParser(description=__doc__)
parser.add_argument("sweep_dir", type=Path)
args = parser.parse_args()
if not args.sweep_dir.is_dir() or not os.access(args.sweep_dir, os.W_OK):  # before reading every job
    problem = "is not writable (the report goes there)" if args.sweep_dir.is_dir() else "is not a folder"
    sys.exit(f"error: sweep_dir={str(args.sweep_dir)!r} {problem}")
if not (args.sweep_dir / "multirun.yaml").is_file():  # a folder of sweeps: their jobs would be pooled as one
    run = "; it is a run's folder: its results are its metrics.json" if (args.sweep_dir / ".hydra").is_dir() else ""
    sys.exit(f"error: sweep_dir={str(args.sweep_dir)!r} is not a sweep folder: it holds no multirun.yaml{run}")
try:
    rows = write_report(args.sweep_dir)
except (FileNotFoundError, ConfigError) as e:
    sys.exit(f"error: {e}")
except Exception as e:  # a record crafted past every check: one line all the same (a sweep's end says the same)
    sys.exit(f"error: the report could not be written: {one_line(e)}")
print((args.sweep_dir / "summary.md").read_text())
print(f"wrote results.csv, summary.md and plots into {args.sweep_dir}")
sys.exit(1 if any(r["status"] != "ok" for r in rows) else 0)
