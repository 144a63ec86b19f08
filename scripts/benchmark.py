"""Speed of attnlab against the same work written by hand (attnlab.bench).

python scripts/benchmark.py                      # everything (CPU: ~20 minutes on 2 cores)
python scripts/benchmark.py --only processes     # the study and the one-run rows
python scripts/benchmark.py --device cuda        # on a GPU: adds bf16 mixed precision rows
python scripts/benchmark.py --quick              # tiny sizes, to check that it runs
python scripts/benchmark.py --out docs/benchmark.md

Whole processes: `python scripts/train.py -m experiment=limitations` (the README's study, default
launcher settings, report and TensorBoard included) and `python scripts/train.py` (one run at the
defaults), each against the same trainings by hand in one process. Per step: the seeds' loop, a
template Lightning recipe and attnlab; long sequences: the seeds' loop against attnlab.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnlab.bench.measure import measure_step, train_vs_replay
from attnlab.bench.table import Row, machine, median_result, render

# (batch, seq_len, steps, warm-up, window, steps per epoch)
SHORT = [(256, 32, 330, 30, 25, 100), (1024, 32, 130, 10, 20, 40)]
LONG_LENS, LONG_BATCH, LONG_STEPS = [1024, 4096, 8192, 16384], 8, 4
QUICK_SHORT = [(64, 16, 40, 5, 5, 8)]
QUICK_LONG_LENS, QUICK_LONG_BATCH, QUICK_LONG_STEPS = [64, 128], 2, 4
QUICK_TRAIN = ["data.n_train=256", "data.n_val=128", "data.n_test=128", "data.batch_size=64", "trainer.max_epochs=2"]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def step_rows(device: str, threads: int, rounds: int, quick: bool) -> list[Row]:
    base = {"device": device, "d_model": 32, "threads": threads, "bf16": False}
    short = QUICK_SHORT if quick else SHORT
    long_lens, long_batch, long_steps = (
        (QUICK_LONG_LENS, QUICK_LONG_BATCH, QUICK_LONG_STEPS) if quick else (LONG_LENS, LONG_BATCH, LONG_STEPS)
    )
    rows: list[Row] = []
    for bf16 in [False, True] if device.startswith("cuda") else [False]:
        for batch, seq_len, steps, warmup, window, per_epoch in short:
            # The contestants take turns, `rounds` times; each keeps the median of its rounds.
            runs: dict[str, list[dict[str, Any]]] = {who: [] for who in ("seed loop", "naive Lightning", "attnlab")}
            specs = {}
            for _ in range(rounds):
                for who in runs:
                    specs[who] = {**base, "who": who, "batch": batch, "seq_len": seq_len, "steps": steps,
                                  "warmup": warmup, "window": window, "steps_per_epoch": per_epoch,
                                  "bf16": bf16}  # fmt: skip
                    runs[who].append(measure_step(specs[who], timeout=300))
                    log(f"  {who:16} B={batch:5} L={seq_len:6} bf16={bf16}: {runs[who][-1]}")
            rows += [(who, specs[who], median_result(results)) for who, results in runs.items()]
        for seq_len in long_lens:
            for who in ("seed loop", "attnlab"):
                steps = long_steps + 1  # one warm-up step, then one window per step
                spec = {**base, "who": who, "batch": long_batch, "seq_len": seq_len, "steps": steps, "warmup": 1,
                        "window": 1, "steps_per_epoch": steps, "bf16": bf16, "long": True}  # fmt: skip
                rows.append((who, spec, measure_step(spec, timeout=240)))
                log(f"  {who:16} B={long_batch:5} L={seq_len:6} bf16={bf16}: {rows[-1][2]}")
    return rows


def process_rows(device: str, rounds: int, quick: bool) -> list[dict[str, Any]]:
    extra = ["trainer=gpu"] if device.startswith("cuda") else []
    study = ["experiment=limitations", *extra]
    run = [*extra]
    if quick:  # a handful of tiny jobs
        study += [*QUICK_TRAIN, "model.pos_enc=none,rope", "seed=0"]
        run += QUICK_TRAIN
    out = []
    for what, args, sweep in (("study", study, True), ("one run", run, False)):
        log(f"{what}: python scripts/train.py {'-m ' if sweep else ''}{' '.join(args)}")
        out.append({"what": what, **train_vs_replay(args, sweep, rounds, device, log)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--only", choices=["processes", "steps"], help="one part of the benchmark")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per step measurement (0: default)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of each comparison")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    args = parser.parse_args()

    rounds = 1 if args.quick else args.rounds
    processes = process_rows(args.device, rounds, args.quick) if args.only != "steps" else []
    rows = step_rows(args.device, args.threads, rounds, args.quick) if args.only != "processes" else []
    command = " ".join(["python scripts/benchmark.py", *sys.argv[1:]])
    table = render(command, machine(args.threads, args.device), rows, processes)
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
