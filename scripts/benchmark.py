"""Training throughput and memory: a hand-written loop vs a template Lightning recipe vs attnlab.

python scripts/benchmark.py                      # the full table (CPU: ~5-8 minutes on 2 cores)
python scripts/benchmark.py --device cuda        # on a GPU, adds bf16 mixed precision rows
python scripts/benchmark.py --quick              # tiny sizes, to check that it runs
python scripts/benchmark.py --out docs/benchmark.md

Contestants, same model size, batch and sequence length:
  seed loop       what a user writes from the seeds: explicit softmax(QK^T/sqrt(d))V materialising
                  the (L, L) matrix, Adam, data as tensors, a plain Python loop;
  naive Lightning the same model in a LightningModule fed by DataLoader(TensorDataset), with
                  self.log every step: the usual template recipe;
  attnlab         scripts/train.py's own path (attnlab.train.train), default logging, metrics,
                  diagnostics and checkpointing on.
Every measurement runs in a fresh subprocess (its own memory peak; a crash or out-of-memory there
becomes a table cell). Throughput is the median over windows of steps inside an epoch after
warm-up (attnlab.timing.samples_per_second); memory is the peak resident memory of the process
above what it held just before training (CPU), or torch.cuda.max_memory_allocated (GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT_GB = 16  # per measurement, below this machine's 24 GB: an explicit (L, L) matrix that
# does not fit fails inside its own process instead of bringing the machine down


# ----------------------------------------------------------------------------- the contestants
def seed_model(d_model: int):
    """The seeds' classifier as a user would write it: explicit attention, max-pool, linear head."""
    import torch
    from torch import nn

    class SeedAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(1, d_model)
            self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
            self.out = nn.Linear(d_model, d_model)
            self.head = nn.Linear(d_model, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            q, k, v = self.q(h), self.k(h), self.v(h)
            weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d_model), dim=-1)  # (B, L, L)
            return self.head(self.out(weights @ v).amax(dim=1))

    return SeedAttention()


def tensors(n: int, seq_len: int, device: str):
    from attnlab.data import make_split

    x, y = make_split("halfswap", n, seq_len, 1, seed=0)
    return x.to(device), y.to(device)


def run_seed_loop(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    device, batch, steps = spec["device"], spec["batch"], spec["steps"]
    torch.manual_seed(0)
    model = seed_model(spec["d_model"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = tensors(batch * spec["steps_per_epoch"], spec["seq_len"], device)
    baseline = rss_mb()
    ends = []
    step = 0
    while step < steps:
        epoch = step // spec["steps_per_epoch"]
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=spec["bf16"]):
                loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            ends.append((epoch, time.perf_counter()))
            step += 1
            if step >= steps:
                break
    return {"ends": ends, "baseline_mb": baseline}


def run_naive_lightning(spec: dict[str, Any]) -> dict[str, Any]:
    import pytorch_lightning as pl
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from attnlab.timing import StepClock

    class Naive(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = seed_model(spec["d_model"])

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            self.log("train_loss", loss, on_step=True, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    torch.manual_seed(0)
    x, y = tensors(spec["batch"] * spec["steps_per_epoch"], spec["seq_len"], "cpu")
    loader = DataLoader(TensorDataset(x, y), batch_size=spec["batch"], shuffle=True)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="gpu" if spec["device"].startswith("cuda") else "cpu",
            devices=1,
            max_steps=spec["steps"],
            precision="bf16-mixed" if spec["bf16"] else "32-true",
            callbacks=[clock],
            default_root_dir=tmp,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        baseline = rss_mb()
        trainer.fit(Naive(), loader)
    return {"ends": clock.ends, "baseline_mb": baseline}


def run_attnlab(spec: dict[str, Any]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from attnlab.config import register_configs
    from attnlab.timing import StepClock
    from attnlab.train import train

    register_configs()
    epochs = math.ceil(spec["steps"] / spec["steps_per_epoch"])
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        overrides = [
            f"output_dir={tmp}",
            "data=halfswap",
            "model.pos_enc=sinusoidal",
            f"model.d_model={spec['d_model']}",
            f"model.max_len={spec['seq_len']}",
            f"data.seq_len={spec['seq_len']}",
            f"data.batch_size={spec['batch']}",
            f"data.n_train={spec['batch'] * spec['steps_per_epoch']}",
            f"data.n_val={spec['batch']}",
            f"data.n_test={spec['batch']}",
            f"trainer.max_epochs={epochs}",
            f"trainer.accelerator={'gpu' if spec['device'].startswith('cuda') else 'cpu'}",
            f"trainer.precision={'bf16-mixed' if spec['bf16'] else '32-true'}",
            "trainer.enable_progress_bar=false",
        ]
        cfg = compose("train", overrides)
        clock = StepClock()
        baseline = rss_mb()
        train(cfg, extra_callbacks=[clock])
    return {"ends": clock.ends, "baseline_mb": baseline}


CONTESTANTS = {"seed loop": run_seed_loop, "naive Lightning": run_naive_lightning, "attnlab": run_attnlab}


# ----------------------------------------------------------------------------- measuring
def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import torch

    limit = MEMORY_LIMIT_GB * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit + 8 * 2**30, resource.RLIM_INFINITY))  # + address-space slack
    torch.set_num_threads(spec["threads"]) if spec["threads"] else None
    if spec["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = CONTESTANTS[spec["who"]](spec)
    from attnlab.timing import samples_per_second

    ends = result["ends"]
    out = {
        "samples_per_s": samples_per_second(ends, spec["batch"], spec["warmup"], spec["window"]),
        "steps": len(ends),
    }
    if spec["device"].startswith("cuda"):
        out["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - result["baseline_mb"]
    return out


def measure(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        text = proc.stderr
        oom = any(s in text for s in ("can't allocate memory", "MemoryError", "out of memory", "CUDA out of memory"))
        return {"error": "out of memory" if oom or proc.returncode == -9 else f"failed (exit {proc.returncode})"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def startup(device: str, jobs: int = 8) -> dict[str, Any]:
    """`python scripts/train.py` from process start to the first training step, and the per-job overhead
    of a multirun: (wall(jobs) - wall(1 job)) / (jobs - 1) minus the jobs' own fit time."""
    tiny = [
        "data.n_train=512",
        "data.n_val=256",
        "data.n_test=256",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    ]
    if device.startswith("cuda"):
        tiny.append("trainer=gpu")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        subprocess.run(
            [sys.executable, "scripts/train.py", *tiny, f"hydra.run.dir={run}"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        first_step = json.loads((run / "metrics.json").read_text())["startup_seconds"]
        walls, fits = {}, {}
        for n in (1, jobs):
            sweep = Path(tmp) / f"sweep{n}"
            seeds = ",".join(map(str, range(n)))
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "scripts/train.py", "-m", *tiny, f"seed={seeds}", f"hydra.sweep.dir={sweep}"],
                cwd=ROOT,
                capture_output=True,
                check=True,
            )
            walls[n] = time.perf_counter() - t0
            fits[n] = [json.loads(p.read_text())["fit_seconds"] for p in sweep.glob("*/metrics.json")]
    per_job = (walls[jobs] - walls[1]) / (jobs - 1)
    return {"first_step_s": first_step, "per_job_s": per_job, "fit_s": sum(fits[jobs]) / len(fits[jobs])}


def linear_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y over x."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return slope, my - slope * mx


def median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in results if r.get("samples_per_s")]
    if not good:
        return results[0]
    good.sort(key=lambda r: r["samples_per_s"])
    middle = good[len(good) // 2]
    return {**middle, "spread": (good[0]["samples_per_s"], good[-1]["samples_per_s"]), "rounds": len(good)}


# ----------------------------------------------------------------------------- the table
def fmt(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:,.0f}{unit}" if v >= 100 else f"{v:.2f}{unit}" if v < 10 else f"{v:.1f}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per measurement (0: default)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of the short rows")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    cuda = args.device.startswith("cuda")
    base = {"device": args.device, "d_model": 32, "threads": args.threads, "bf16": False}
    if args.quick:
        short = [(64, 16, 40, 5, 5, 8)]
        long_lens, long_batch, long_steps = [64, 128], 2, 4
    else:  # (batch, seq_len, steps, warm-up, window, steps per epoch)
        short = [(256, 32, 330, 30, 25, 100), (1024, 32, 130, 10, 20, 40)]
        long_lens, long_batch, long_steps = [1024, 4096, 8192, 16384], 8, 4
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    precisions = [False, True] if cuda else [False]
    for bf16 in precisions:
        for batch, seq_len, steps, warmup, window, per_epoch in short:
            # This machine's speed drifts by ±20% between processes, so the contestants take turns,
            # `rounds` times, and each keeps the median of its rounds.
            runs: dict[str, list[dict[str, Any]]] = {who: [] for who in CONTESTANTS}
            for _ in range(1 if args.quick else args.rounds):
                for who in CONTESTANTS:
                    spec = {**base, "who": who, "batch": batch, "seq_len": seq_len, "steps": steps, "warmup": warmup,
                            "window": window, "steps_per_epoch": per_epoch, "bf16": bf16}  # fmt: skip
                    runs[who].append(measure(spec, timeout=300))
                    print(f"  {who:16} B={batch:5} L={seq_len:6} bf16={bf16}: {runs[who][-1]}", file=sys.stderr)
            for who, results in runs.items():
                rows.append((who, spec | {"who": who}, median_result(results)))
        for seq_len in long_lens:
            for who in ("seed loop", "attnlab"):
                steps = long_steps + 1  # one warm-up step, then one window per step
                spec = {**base, "who": who, "batch": long_batch, "seq_len": seq_len, "steps": steps, "warmup": 1,
                        "window": 1, "steps_per_epoch": steps, "bf16": bf16, "long": True}  # fmt: skip
                rows.append((who, spec, measure(spec, timeout=240)))
                print(f"  {who:16} B={long_batch:5} L={seq_len:6} bf16={bf16}: {rows[-1][2]}", file=sys.stderr)
    timing = startup(args.device, jobs=2 if args.quick else 8)
    table = render(rows, timing, " ".join(["python scripts/benchmark.py", *sys.argv[1:]]), args.threads)
    print(table)
    if args.out:
        args.out.write_text(table)


def render(
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]], timing: dict[str, Any] | None, command: str, threads: int
) -> str:
    """The markdown table; ratios are against the seed loop at the same batch, length and precision."""
    import torch

    cuda = any(spec["device"].startswith("cuda") for _, spec, _ in rows)
    lines = [
        f"# Benchmark: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{torch.cuda.get_device_name() if cuda else 'no GPU'}; torch {torch.__version__}, "
        f"threads {threads or torch.get_num_threads()}; d_model 32, 1 head, 1 layer; {time.strftime('%Y-%m-%d')}.",
        "",
        "| contestant | precision | batch | seq_len | samples/s | × seed loop | peak memory (MB) | rounds: min–max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    reference = {}
    for who, spec, res in rows:
        key = (spec["batch"], spec["seq_len"], spec["bf16"])
        if who == "seed loop" and res.get("samples_per_s"):
            reference[key] = res["samples_per_s"]
        ratio = res.get("samples_per_s") and reference.get(key) and res["samples_per_s"] / reference[key]
        speed = res.get("error") or fmt(res.get("samples_per_s"))
        spread = f"{fmt(res['spread'][0])}–{fmt(res['spread'][1])} ({res['rounds']})" if "spread" in res else "–"
        lines.append(
            f"| {who} | {'bf16-mixed' if spec['bf16'] else 'fp32'} | {spec['batch']} | {spec['seq_len']} | {speed} | "
            f"{fmt(ratio) + '×' if ratio else '–'} | {fmt(res.get('peak_mb'))} | {spread} |"
        )
    long_rows = [(s["seq_len"], r["peak_mb"], s["batch"]) for w, s, r in rows if w == "attnlab" and s.get("long")]
    fused = [(n, mb) for n, mb, _ in long_rows if mb is not None]
    if len(fused) >= 2:
        slope, intercept = linear_fit(fused)
        points = ", ".join(f"{n}: {mb:.0f} MB" for n, mb in fused)
        lines += [
            "",
            f"attnlab peak memory vs seq_len (batch {long_rows[0][2]}): {points}; least-squares fit "
            f"{intercept:.0f} MB + {slope * 1024:.1f} MB per 1024 positions.",
        ]
    if timing:
        lines += [
            "",
            f"Start-up, `python scripts/train.py` to its first training step: {timing['first_step_s']:.2f} s.",
            f"Multirun, cost per extra job: {timing['per_job_s']:.2f} s, of which fit {timing['fit_s']:.2f} s: "
            f"overhead {timing['per_job_s'] - timing['fit_s']:.2f} s per job (tiny jobs of 512 sequences, 1 epoch).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
