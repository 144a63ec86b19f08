"""The benchmark keeps working: every contestant measured at tiny sizes, the hand-written replay
trains what a run folder holds, and the table.

No timing assertions: how fast is a property of the machine, reported by the benchmark itself.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attnlab.bench import (
    CONTESTANTS,
    PARTS,
    STEPS_HEAD,
    TITLE,
    import_seconds,
    job_parts,
    measure_step,
    merge,
    render,
    replay,
    samples_per_second,
)

from .conftest import TINY, run_train

TINY_SPEC = {"device": "cpu", "d_model": 8, "threads": 0, "bf16": False, "batch": 16, "seq_len": 8, "steps": 12,
             "warmup": 2, "window": 2, "steps_per_epoch": 6}  # fmt: skip


@pytest.mark.parametrize("who", list(CONTESTANTS))
def test_each_contestant_trains_and_is_timed(who: str) -> None:
    ends, _ = CONTESTANTS[who]({**TINY_SPEC, "who": who})
    assert len(ends) >= TINY_SPEC["steps"]
    assert samples_per_second(ends, TINY_SPEC["batch"], TINY_SPEC["warmup"], TINY_SPEC["window"]) > 0


def test_replay_trains_every_run_of_a_folder_for_its_epochs(tmp_path: Path, monkeypatch) -> None:
    """The hand-written reference does the same work: one training per finished run, as many epochs."""
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, "trainer.max_epochs=2", "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps: list[int] = []
    import torch

    original = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (steps.append(1), original(self, *a, **k))[1])
    assert replay(sweep) == 2
    held = [json.loads(p.read_text())["global_step"] for p in sweep.glob("*/metrics.json")]
    assert len(steps) == sum(held) == 2 * 2 * (256 // 64)  # 2 runs x 2 epochs x 4 batches


def test_the_hand_written_replay_process_does_not_import_lightning() -> None:
    """The reference imports torch alone, as a hand-written script would: importing Lightning too (through a
    module of the benchmark) would add its seconds to the reference and flatter attnlab's ratio."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", "import attnlab.bench"], env=env, capture_output=True, text=True, check=True
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported and "attnlab.bench" in imported
    assert "pytorch_lightning" not in imported and "lightning_fabric" not in imported


def test_table() -> None:
    rows = [
        {**TINY_SPEC, "who": "seed loop", "samples_per_s": 1000.0, "peak_mb": 10.0, "speeds": [1000.0]},
        {**TINY_SPEC, "who": "attnlab", "samples_per_s": 900.0, "peak_mb": 12.0, "speeds": [850.0, 900.0, 950.0]},
        {**TINY_SPEC, "who": "seed loop", "seq_len": 64, "long": True, "error": "out of memory", "speeds": []},
        {**TINY_SPEC, "who": "attnlab", "seq_len": 64, "long": True, "samples_per_s": 5.0, "peak_mb": 20.0},
        {**TINY_SPEC, "who": "attnlab", "seq_len": 128, "long": True, "samples_per_s": 2.0, "peak_mb": 30.0},
    ]
    processes = [
        {"what": "study", "command": "python scripts/train.py -m experiment=limitations", "jobs": 42,
         "seconds": {"attnlab": (50.0, 48.0, 52.0), "hand-written": (40.0, 39.0, 41.0)}, "rounds": 3,
         "pairs": (0.81, 0.75, 0.85)},
        {"what": "one run", "command": "python scripts/train.py", "jobs": 1, "startup_s": 3.5,
         "imports_s": {"torch": 1.5, "torch, pytorch_lightning": 3.0},
         "seconds": {"attnlab": (10.0, 9.0, 11.0), "hand-written": (9.0, 8.5, 9.5)}, "rounds": 3,
         "pairs": (0.9, 0.88, 0.95)},
    ]  # fmt: skip
    table = render("Measured now: `python scripts/benchmark.py`.", rows, processes)
    assert table.startswith(TITLE + "\n") and table.count("Measured now: `python scripts/benchmark.py`.") == 2
    assert "| seed loop | fp32 | 16 | 8 | 1,000 | 1.00× | 10.0 | – |" in table  # one round: no spread
    assert "| attnlab | fp32 | 16 | 8 | 900 | 0.90× | 12.0 | 850–950 (3) |" in table
    assert "| seed loop | fp32 | 16 | 64 | out of memory | – | – | – |" in table
    assert "10 MB + 160.0 MB per 1024 positions" in table
    assert "| 42 | 50.0 (48.0–52.0) | 40.0 (39.0–41.0) | 0.80× | 0.81× (0.75–0.85) | 3 |" in table
    assert "| 1 | 10.0 (9.0–11.0) | 9.0 (8.5–9.5) | 0.90× | 0.90× (0.88–0.95) | 3 |" in table
    assert "first training step: 3.50 s" in table
    assert 'pytorch_lightning"` is 3.00 s old once they are imported (with torch alone 1.50 s' in table
    assert "pytorch_lightning 1.50 s more" in table
    assert "the other 0.50 s" in table


def test_import_seconds_are_a_fresh_process_age_once_imported() -> None:
    """On the clock of a run's start-up (process age): the interpreter's start counts, then the imports."""
    assert 0 <= import_seconds("json") < import_seconds("json, torch")  # torch's import alone takes seconds


def test_a_step_measurement_runs_in_a_process_of_its_own() -> None:
    """measure_step: the worker process, its throughput and memory read back; a failure becomes a cell."""
    result = measure_step({**TINY_SPEC, "who": "attnlab"}, timeout=600)
    assert result["steps"] >= TINY_SPEC["steps"] and result["samples_per_s"] > 0 and "peak_mb" in result
    assert measure_step({**TINY_SPEC, "who": "nobody"}, timeout=600) == {"error": "failed (exit 1)"}


def test_the_parts_of_a_study_job_are_timed_within_it(tmp_path: Path) -> None:
    """`--only parts`: every part's line, none longer than the job, the job's own line 100%, the hand-written
    training of the same job beside it; written into `--out` beside the sections it did not measure."""
    out = tmp_path / "benchmark.md"
    out.write_text(f"{TITLE}\n\n## Where a study job's time goes\n\nan older table\n\n{STEPS_HEAD}\n\nold rows\n")
    proc = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--only", "parts", "--quick", "--out", str(out)],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {}
    text = out.read_text()
    for line in text.splitlines():
        if line.startswith("| ") and line.endswith("% |"):
            label, ms, share = (cell.strip() for cell in line.strip("|").split("|"))
            rows[label.replace("&nbsp;", "")] = (int(ms), share)
    job = rows["the job: attnlab.train.train"]
    assert set(rows) == {label.strip() for label, *_ in PARTS} | {"hand-written: attnlab.bench.replay"}
    assert job[1] == "100%" and all(ms <= job[0] for label, (ms, _) in rows.items() if "hand-written" not in label)
    assert rows["diagnostics: the shuffled pass"][0] > 0 and rows["checkpoint saves"][0] > 0
    job_words = "experiment=limitations data=halfswap model.pos_enc=sinusoidal seed=0"
    assert re.search(rf"\(`{job_words}`, \d+ epochs\)", text)
    # the measured section replaced, with its time, commit and command; the steps' section kept as it was
    assert "an older table" not in text and text.endswith(f"{STEPS_HEAD}\n\nold rows\n")
    assert re.search(r"Measured \d{4}-\d\d-\d\d \d\d:\d\d(–\d\d:\d\d)? \((commit [0-9a-f]{7}|no git checkout)", text)
    assert "`python scripts/benchmark.py --only parts --quick --out " in text


def test_a_run_replaces_the_sections_it_measured_and_keeps_the_others() -> None:
    old = f"{TITLE}\n\nintro\n\n## Whole processes\n\nold study\n\n## Where a study job's time goes\n\nold parts\n"
    new = render("Measured now.", [], [], {"job": "j", "epochs": 2, "rounds": 1, "ms": {PARTS[0][0]: 10.0}})
    merged = merge(old, new)
    assert merged.startswith(TITLE + "\n") and "old study" in merged and "old parts" not in merged
    assert merged.index("## Whole processes") < merged.index("## Where a study job's time goes")
    assert "| the job: attnlab.train.train | 10 | 100% |" in merged and merge(None, new) == merge(new, new)


@pytest.mark.parametrize(
    "content", ["# My notes on speed\n\nwritten by hand\n", f"{TITLE}\n\n## My notes\n\nwritten by hand\n", None]
)
def test_out_refuses_what_it_would_lose_before_measuring(tmp_path: Path, content: str | None) -> None:
    """A file that is not this script's output (its text would be lost), or a folder: one line, exit 1, nothing
    measured, the file as it was."""
    out = tmp_path / "notes.md"
    if content is None:
        out.mkdir()
    else:
        out.write_text(content)
    proc = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--only", "parts", "--quick", "--out", str(out)],
        cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: --out={str(out)!r} is invalid: ") and proc.stdout == ""
    assert out.is_dir() if content is None else out.read_text() == content


def test_the_parts_timing_puts_back_what_it_wrapped() -> None:
    import pytorch_lightning as pl

    import attnlab.train

    before = (attnlab.train.train, pl.Trainer.fit, pl.LightningModule.log)
    job_parts(rounds=0, device="cpu")
    assert (attnlab.train.train, pl.Trainer.fit, pl.LightningModule.log) == before


@pytest.mark.parametrize(
    ("args", "said"),
    [(["--rounds", "0"], "--rounds=0: at least 1"), (["--only", "nothing"], "invalid choice: 'nothing'")],
)
def test_a_bad_option_is_one_line_and_exit_1(args: list[str], said: str) -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/benchmark.py", *args], cwd=Path(__file__).parents[1], capture_output=True, text=True
    )
    assert proc.returncode == 1 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
