"""The markdown of docs/benchmark.md."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

Row = tuple[str, dict[str, Any], dict[str, Any]]  # (contestant, spec, result)


def fmt(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:,.0f}{unit}" if v >= 100 else f"{v:.2f}{unit}" if v < 10 else f"{v:.1f}{unit}"


def machine(threads: int, device: str) -> str:
    import torch

    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "no GPU"
    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {gpu}; torch {torch.__version__}, "
        f"threads {threads or torch.get_num_threads()}; {time.strftime('%Y-%m-%d')}."
    )


def render_steps(rows: list[Row]) -> list[str]:
    """Per-step throughput; ratios against the seed loop at the same batch, length and precision."""
    lines = [
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
    fused = [(s["seq_len"], r["peak_mb"]) for w, s, r in rows if w == "attnlab" and s.get("long") and "peak_mb" in r]
    if len(fused) >= 2:
        slope, intercept = statistics.linear_regression(*zip(*fused, strict=True))
        points = ", ".join(f"{n}: {mb:.0f} MB" for n, mb in fused)
        batch = next(s["batch"] for _, s, _ in rows if s.get("long"))
        lines += [
            "",
            f"attnlab peak memory vs seq_len (batch {batch}): {points}; least-squares fit "
            f"{intercept:.0f} MB + {slope * 1024:.1f} MB per 1024 positions.",
        ]
    return lines


def render_processes(processes: list[dict[str, Any]]) -> list[str]:
    """Whole processes, attnlab against the same trainings by hand; × > 1: attnlab took less time."""
    lines = [
        "| what | command | jobs | attnlab: s, median (min–max) | hand-written: s | × hand-written | rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in processes:
        (a, a_lo, a_hi), (h, h_lo, h_hi) = p["seconds"]["attnlab"], p["seconds"]["hand-written"]
        lines.append(
            f"| {p['what']} | `{p['command']}` | {p['jobs']} | {a:.1f} ({a_lo:.1f}–{a_hi:.1f}) | "
            f"{h:.1f} ({h_lo:.1f}–{h_hi:.1f}) | {h / a:.2f}× | {p['rounds']} |"
        )
    for p in processes:
        if p.get("imports_s") and p.get("startup_s"):  # a single run's row: its start-up against the floor
            both, torch_only = p["imports_s"]["torch, pytorch_lightning"], p["imports_s"]["torch"]
            lines += [
                "",
                f"Start-up, `python scripts/train.py` from process start to its first training step: "
                f'{p["startup_s"]:.2f} s. The floor, on the same clock: a fresh `python -c "import torch, '
                f'pytorch_lightning"` is {both:.2f} s old once they are imported (with torch alone '
                f"{torch_only:.2f} s, which the hand-written run imports too; pytorch_lightning "
                f"{both - torch_only:.2f} s more). attnlab's own start-up, Hydra's composition, the checks, the "
                f"data, model, logger and Trainer: the other {p['startup_s'] - both:.2f} s.",
            ]
    return lines


def render(command: str, header: str, rows: list[Row], processes: list[dict[str, Any]]) -> str:
    lines = [f"# Benchmark: `{command}`", "", header, ""]
    if processes:
        lines += [
            "## Whole processes",
            "",
            "Wall time of the whole process, start-up included, against the same trainings written by hand",
            "in one process (`attnlab.bench.contestants.replay`: each run's data, model and epochs; Adam,",
            "whole-tensor batches, validation every epoch, test of the best weights; no logging, checkpoints",
            "or diagnostics). The two take turns, round after round. `× hand-written` > 1: attnlab took less time.",
            "",
            *render_processes(processes),
            "",
        ]
    if rows:
        lines += ["## Per training step (d_model 32, 1 head, 1 layer)", "", *render_steps(rows), ""]
    return "\n".join(lines)
