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

from attnlab.bench.measure import steps_in_turns, train_vs_replay
from attnlab.bench.table import Row, machine, render

SIZES = ("batch", "seq_len", "steps", "warmup", "window", "steps_per_epoch")  # of a per-step measurement
SHORT = {False: [(256, 32, 330, 30, 25, 100), (1024, 32, 130, 10, 20, 40)], True: [(64, 16, 40, 5, 5, 8)]}  # [quick]
LONG = {False: ([1024, 4096, 8192, 16384], 8, 4), True: ([64, 128], 2, 4)}  # [quick]: (seq_lens, batch, steps)
QUICK_TRAIN = ["data.n_train=256", "data.n_val=128", "data.n_test=128", "data.batch_size=64", "trainer.max_epochs=2"]
QUICK_STUDY = [*QUICK_TRAIN, "model.pos_enc=none,rope", "seed=0"]  # a handful of tiny jobs


def step_rows(device: str, threads: int, rounds: int, quick: bool) -> list[Row]:
    long_lens, batch, steps = LONG[quick]
    rows: list[Row] = []
    for bf16 in [False, True] if device.startswith("cuda") else [False]:
        base = {"device": device, "d_model": 32, "threads": threads, "bf16": bf16}
        for sizes in SHORT[quick]:
            spec = {**base, **dict(zip(SIZES, sizes, strict=True))}
            rows += steps_in_turns(("seed loop", "naive Lightning", "attnlab"), spec, rounds, timeout=300)
        for seq_len in long_lens:  # one warm-up step, then one window per step
            spec = {**base, **dict(zip(SIZES, (batch, seq_len, steps + 1, 1, 1, steps + 1), strict=True)), "long": True}
            rows += steps_in_turns(("seed loop", "attnlab"), spec, 1, timeout=240)
    return rows


def process_rows(device: str, rounds: int, quick: bool) -> list[dict[str, Any]]:
    gpu = ["trainer=gpu"] if device.startswith("cuda") else []
    return [
        train_vs_replay(
            "study", ["experiment=limitations", *gpu, *(QUICK_STUDY if quick else [])], True, rounds, device
        ),
        train_vs_replay("one run", [*gpu, *(QUICK_TRAIN if quick else [])], False, rounds, device),
    ]


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
