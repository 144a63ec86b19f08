"""Results of a sweep: one table row per job, mean ± std over seeds, and plots.

`python scripts/report.py <sweep dir>` writes into the sweep folder:
  results.csv   one row per job (settings from its .hydra/config.yaml, metrics from metrics.json)
  summary.md    test accuracy mean ± std over seeds per setting, beside chance; failed jobs listed
  *.png         accuracy vs seq_len per pos_enc, accuracy per task x pos_enc, attention entropy vs
                d_model per scale: each drawn when the sweep varies its x axis

The sweeper (hydra/sweeper=attnlab) writes it at the end of every multirun, however the sweep ended.
Every job the sweep planned (its jobs.json) is a row: ok, failed (FAILED, or metrics.json unreadable),
interrupted (stopped by a signal; resumable), unfinished (killed), or not started. None is dropped.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from attnlab import runs

SETTINGS = {  # column -> (config section, key)
    "task": ("data", "task"),
    "seq_len": ("data", "seq_len"),
    "pos_enc": ("model", "pos_enc"),
    "scale": ("model", "scale"),
    "pool": ("model", "pool"),
    "d_model": ("model", "d_model"),
    "num_heads": ("model", "num_heads"),
    "num_layers": ("model", "num_layers"),
    "lr": ("optim", "lr"),
}
METRICS = ["val/acc_best", "test/acc", "test/acc_shuffled", "test/loss"]
DIAGNOSTICS = ["attn/entropy", "attn/entropy_uniform", "attn/max_prob", "attn/score_std"]
STATUSES = ("ok", "failed", "interrupted", "unfinished", "not started")
NUM_CLASSES = 2
CHANCE = 1 / NUM_CLASSES  # classes are balanced


def planned_jobs(sweep_dir: Path) -> list[str] | None:
    """The folders of every job the sweep planned (written by the sweeper before the first job runs)."""
    try:
        return [job["dir"] for job in json.loads((sweep_dir / "jobs.json").read_text())["jobs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Planned jobs, plus any job folder found on disk (a sweep from before jobs.json, or a moved one)."""
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    planned = [sweep_dir / d for d in planned_jobs(sweep_dir) or []]
    return planned + sorted(found - set(planned))


def read_job(sweep_dir: Path, job_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"job": str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else "."}
    try:
        cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        row.update({col: OmegaConf.select(cfg, f"{section}.{key}") for col, (section, key) in SETTINGS.items()})
        row["seed"] = cfg.get("seed")
    except Exception:  # never started (or its config is gone): a row all the same
        row.update(dict.fromkeys([*SETTINGS, "seed"]))
        row["status"] = "unfinished" if job_dir.exists() else "not started"
        return row
    row["status"], reason = runs.status(job_dir)
    if row["status"] == "ok":
        metrics = json.loads((job_dir / runs.METRICS).read_text())
        row.update({k: metrics.get(k) for k in METRICS})
        row.update({k: (metrics.get("diagnostics") or {}).get(k) for k in DIAGNOSTICS})
        row["fit_seconds"] = metrics.get("fit_seconds")
    elif reason:
        row["error"] = reason
    return row


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    return [read_job(sweep_dir, d) for d in job_dirs(sweep_dir)]


def varying(rows: list[dict[str, Any]], columns: Iterable[str]) -> list[str]:
    """The setting columns that take more than one value in the sweep (task and pos_enc always)."""
    return [c for c in columns if c in ("task", "pos_enc") or len({str(r[c]) for r in rows}) > 1]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def group(rows: list[dict[str, Any]], keys: list[str], metric: str) -> dict[tuple, list[float]]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and r.get(metric) is not None:
            groups[tuple(r[k] for k in keys)].append(float(r[metric]))
    return groups


def natural(setting: tuple) -> tuple:
    """Sort key: numbers by value (8 < 16 < 128), then names."""
    return tuple((0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in setting)


def pm(values: list[float]) -> str:
    """'mean ± std' over seeds; '–' where there is no value, no ± for a single one."""
    if not values:
        return "–"
    m, s = mean_std(values)
    return f"{m:.3f} ± {s:.3f}" if len(values) > 1 else f"{m:.3f}"


def verdict(mean: float) -> str:
    return "chance" if abs(mean - CHANCE) <= 0.1 else "learned" if mean >= 0.9 else "partial"


def summary_markdown(rows: list[dict[str, Any]], sweep_dir: Path) -> str:
    keys = varying(rows, SETTINGS)
    acc, shuffled = group(rows, keys, "test/acc"), group(rows, keys, "test/acc_shuffled")
    count = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines = [
        f"# Sweep summary: `{sweep_dir}`",
        "",
        f"{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in count.items() if n or s == "ok") + ". "
        f"Test accuracy, mean ± std over seeds (n = number of seeds); chance = {CHANCE:.2f} "
        "(balanced classes). `shuffled`: the same test set with positions shuffled.",
        "",
        "| " + " | ".join([*keys, "n", "test/acc", "shuffled", "chance", "verdict"]) + " |",
        "|" + "---|" * (len(keys) + 5),
    ]
    for setting, values in sorted(acc.items(), key=lambda kv: natural(kv[0])):
        m = statistics.fmean(values)
        cells = [
            *map(str, setting),
            str(len(values)),
            pm(values),
            pm(shuffled.get(setting, [])),
            f"{CHANCE:.2f}",
            verdict(m),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["", "## Jobs without results", "", "| job | status | error |", "|---|---|---|"]
        lines += [f"| `{r['job']}` | {r['status']} | {r.get('error', '')} |" for r in bad]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = ["job", "status", *SETTINGS, "seed", *METRICS, *DIAGNOSTICS, "fit_seconds", "error"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot_lines(rows, x: str, line: str, metric: str, path: Path, ylabel: str, reference: str | None = None) -> bool:
    """Mean of `metric` against `x`, one line per value of `line`, averaged over everything else."""
    if len({r[x] for r in rows}) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    for name, points in sorted(_by(rows, line, x, metric).items()):
        xs = sorted(points)
        means = [statistics.fmean(points[v]) for v in xs]
        stds = [statistics.pstdev(points[v]) for v in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{line}={name}")
    if reference:
        ref = _by(rows, line, x, reference)
        xs = sorted({v for pts in ref.values() for v in pts})
        ax.plot(
            xs,
            [statistics.fmean([p for pts in ref.values() for p in pts.get(v, [])]) for v in xs],
            "k--",
            label="uniform attention (log L)",
        )
    if metric.endswith("acc"):
        ax.axhline(CHANCE, color="gray", linestyle=":", label="chance")
        ax.set_ylim(0.3, 1.05)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _by(rows, line: str, x: str, metric: str) -> dict[Any, dict[Any, list[float]]]:
    out: dict[Any, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] == "ok" and r.get(metric) is not None:
            out[r[line]][r[x]].append(float(r[metric]))
    return out


def plot_bars(rows, path: Path) -> bool:
    """Test accuracy per task x pos_enc, mean ± std over seeds, with the chance line."""
    groups = group(rows, ["pos_enc", "task"], "test/acc")
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    encodings = sorted({k[0] for k in groups})
    tasks = sorted({k[1] for k in groups})
    width = 0.8 / len(tasks)
    fig, ax = plt.subplots(figsize=(1.4 * len(encodings) + 2, 4), constrained_layout=True)
    for i, task in enumerate(tasks):
        stats = [mean_std(groups.get((enc, task), [float("nan")])) for enc in encodings]
        xs = [j + (i - (len(tasks) - 1) / 2) * width for j in range(len(encodings))]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=3, label=task)
    ax.axhline(CHANCE, color="gray", linestyle=":", label="chance")
    ax.set_xticks(range(len(encodings)), encodings)
    ax.set_xlabel("model.pos_enc")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(sweep_dir: str | Path) -> list[dict[str, Any]]:
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no job folders (with .hydra/config.yaml) under {sweep_dir}")
    write_csv(rows, sweep_dir / "results.csv")
    (sweep_dir / "summary.md").write_text(summary_markdown(rows, sweep_dir))
    plot_bars(rows, sweep_dir / "acc_by_task_pos_enc.png")
    plot_lines(rows, "seq_len", "pos_enc", "test/acc", sweep_dir / "acc_vs_seq_len.png", "test accuracy")
    plot_lines(
        rows,
        "d_model",
        "scale",
        "attn/entropy",
        sweep_dir / "entropy_vs_d_model.png",
        "attention entropy (nats)",
        reference="attn/entropy_uniform",
    )
    return rows
