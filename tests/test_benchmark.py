"""scripts/benchmark.py keeps working: every contestant measured at tiny sizes, and the table.

No timing assertions: how fast is a property of the machine, reported by the benchmark itself.
"""

import importlib.util
import subprocess
import sys

import pytest

from attnlab.timing import samples_per_second

from .conftest import ROOT

SCRIPT = ROOT / "scripts" / "benchmark.py"
spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)

TINY = {"device": "cpu", "d_model": 8, "threads": 0, "bf16": False, "batch": 16, "seq_len": 8, "steps": 12,
        "warmup": 2, "window": 2, "steps_per_epoch": 6}  # fmt: skip


@pytest.mark.parametrize("who", list(benchmark.CONTESTANTS))
def test_each_contestant_trains_and_is_timed(who: str) -> None:
    result = benchmark.CONTESTANTS[who]({**TINY, "who": who})
    assert len(result["ends"]) >= TINY["steps"]
    assert samples_per_second(result["ends"], TINY["batch"], TINY["warmup"], TINY["window"]) > 0


def test_table() -> None:
    rows = [
        ("seed loop", {**TINY, "who": "seed loop"}, {"samples_per_s": 1000.0, "peak_mb": 10.0}),
        (
            "attnlab",
            {**TINY, "who": "attnlab"},
            {"samples_per_s": 900.0, "peak_mb": 12.0, "spread": (850, 950), "rounds": 3},
        ),
        ("seed loop", {**TINY, "seq_len": 64, "long": True}, {"error": "out of memory"}),
        ("attnlab", {**TINY, "seq_len": 64, "long": True, "who": "attnlab"}, {"samples_per_s": 5.0, "peak_mb": 20.0}),
        ("attnlab", {**TINY, "seq_len": 128, "long": True, "who": "attnlab"}, {"samples_per_s": 2.0, "peak_mb": 30.0}),
    ]
    table = benchmark.render(
        rows, {"first_step_s": 4.0, "per_job_s": 0.5, "fit_s": 0.2}, "python scripts/benchmark.py", 0
    )
    assert "| attnlab | fp32 | 16 | 8 | 900 | 0.90× | 12.0 | 850–950 (3) |" in table
    assert "| seed loop | fp32 | 16 | 64 | out of memory | – | – | – |" in table
    assert "10 MB + 160.0 MB per 1024 positions" in table
    assert "first training step: 4.00 s" in table and "overhead 0.30 s per job" in table


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path) -> None:
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    for who in benchmark.CONTESTANTS:
        assert f"| {who} | fp32 |" in table
    assert "Start-up" in table and "per 1024 positions" in table
