"""Results of a sweep: one table row per job, a summary over seeds, and plots.

`python scripts/report.py <sweep dir>` writes into the sweep folder:
  results.csv   one row per job: its settings, budget (epochs and steps trained), metrics, status
  summary.md    test accuracy (and on position-shuffled sequences) mean ± std over seeds for each
                combination of the settings that vary across the jobs, each seed with its 95% interval,
                the budget, the tested epoch and a verdict (attnlab.verdict: the rule); failed jobs
                listed; and where the runs scored other lengths (evaluation.json), a length-generalisation
                table per setting
  length_generalization.csv / .png   one row per job and length; a panel per setting, a line per seed
  *.png         accuracy and shuffled accuracy per task x pos_enc, accuracy vs seq_len, attention
                entropy vs d_model: each drawn when the sweep varies its x axis

Rows are grouped by every config value that differs between the jobs except `seed`, so a sweep
over `data.n_train` (or any key added later) is never averaged as if it were seeds. Error bars are
the min-max over seeds: what the runs gave, inside [0, 1].

The sweeper (hydra/sweeper=attnlab) writes it at the end of every multirun, however the sweep ended.
Every job the sweep planned (its jobs.json) is a row: ok, failed (FAILED, or metrics.json unreadable),
interrupted (stopped by a signal; resumable), unfinished (killed), or not started. None is dropped.
"""

from __future__ import annotations

import csv
import json
import shlex
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from attnlab import run_folder
from attnlab.board import METRICS as BOARD_METRICS
from attnlab.board import write_board
from attnlab.evaluate import EVALUATION, read_evaluation
from attnlab.naming import KEY_SETTINGS, flatten, safe_dirname
from attnlab.pooling import POOLINGS
from attnlab.posenc import POS_ENCODINGS
from attnlab.resume import continue_command
from attnlab.scaling import SCALES
from attnlab.sweep_record import read_jobs
from attnlab.verdict import CHANCE, RULE, cell_verdict, seed_verdict, wilson

COLUMNS = {key: name for name, key in KEY_SETTINGS.items() if name != "seed"}  # config key -> column name
ALWAYS_GROUPED = ("data.task", "model.pos_enc")
REGISTRY_ORDER = {  # rows in the order the registries list their names
    "model.pos_enc": POS_ENCODINGS.names(),
    "model.scale": SCALES.names(),
    "model.pool": POOLINGS.names(),
}
# Keys that do not change what a job computes (or differ between jobs by construction): never grouped.
NOT_SETTINGS = {
    "seed",
    "model.dim",  # follows data.dim
    "output_dir",
    "resume",
    "progress",
    "verbose",
    "torch_threads",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
}
METRICS = ["val/acc_best", "test/acc", "test/acc_shuffled", "test/loss", "train/acc"]
BUDGET = ["epochs", "steps", "ended_by", "converged", "tested_epoch", "tested_step"]
VERDICT = ["n_test", "ci_low", "ci_high", "verdict"]
DIAGNOSTICS = ["attn/entropy", "attn/entropy_uniform", "attn/max_prob", "attn/score_std"]
STATUSES = ("ok", "failed", "interrupted", "unfinished", "not started")


def planned_jobs(sweep_dir: Path) -> list[Path]:
    """The folders of every job the sweep planned (attnlab.sweep_record)."""
    return [sweep_dir / job["dir"] for job in read_jobs(sweep_dir)]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Planned jobs, plus any job folder found on disk (a moved one, or one planned by a record cut short)."""
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    planned = planned_jobs(sweep_dir)
    return planned + sorted(found - set(planned))


def read_job(sweep_dir: Path, job_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"job": str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else "."}
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "config.yaml"), enum_to_str=True)
        settings = flatten(cfg)  # type: ignore[arg-type]
    except Exception:  # never started (or its config is gone): a row all the same
        row["settings"] = {}
        row.update(dict.fromkeys([*COLUMNS.values(), "seed"]))
        row["status"] = "unfinished" if job_dir.exists() else "not started"
        return row
    row["settings"] = {k: v for k, v in settings.items() if k not in NOT_SETTINGS}
    row.update({col: settings.get(key) for key, col in COLUMNS.items()})
    row["seed"] = settings.get("seed")
    row["status"], reason = run_folder.status(job_dir)
    if row["status"] == "ok":
        try:
            row.update(read_results(job_dir, settings))
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as e:  # a record from elsewhere
            row["status"], reason = "failed", f"its results do not read ({type(e).__name__}: {e})"
    if reason:
        row["error"] = reason
    return row


def read_results(job_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """A finished job's metrics, its tested checkpoint, its seed's verdict (attnlab.verdict) and, where it
    scored other lengths of that same checkpoint, its evaluation."""
    metrics = json.loads((job_dir / run_folder.METRICS).read_text())
    diagnostics = metrics.get("diagnostics") or {}
    row: dict[str, Any] = {k: number(metrics.get(k)) for k in METRICS}
    row.update({k: number(diagnostics.get(k)) for k in DIAGNOSTICS})
    history = metrics["history"]
    if history.get("train/acc"):
        row["train/acc"] = float(history["train/acc"][-1])
    tested = metrics["tested_checkpoint"]
    row.update(epochs=int(metrics["epochs"]), steps=int(metrics["global_step"]), ended_by=str(metrics["ended_by"]))
    row.update(
        converged=bool(metrics["converged"]), tested_epoch=int(tested["epoch"]), tested_step=int(tested["global_step"])
    )
    n = int(settings["data.n_test"])
    acc = float(metrics["test/acc"])
    row["n_test"] = n
    row["ci_low"], row["ci_high"] = wilson(acc, n)
    row["verdict"] = seed_verdict(acc, n, row["converged"])
    row["fit_seconds"] = metrics.get("fit_seconds")
    row["lengths"] = joined_lengths(job_dir, tested, row["converged"])
    return row


def number(value: Any) -> float | None:
    """A metric read from a record: a float, or None where it is absent (ValueError for anything else)."""
    return None if value is None else float(value)


def joined_lengths(job_dir: Path, tested: dict[str, Any], is_converged: bool) -> dict[int, dict[str, Any]]:
    """{seq_len: result} of the job's evaluation.json (read and checked by attnlab.evaluate) when it scored
    the checkpoint the job tested (another checkpoint's numbers would be another model's), each scored length
    with its interval and seed verdict recomputed from its accuracy and count."""
    entry = read_evaluation(job_dir / EVALUATION)
    if not entry:
        return {}
    same = {k: entry["checkpoint"].get(k) for k in ("file", "epoch", "global_step")}
    if same != {k: tested.get(k) for k in ("file", "epoch", "global_step")}:
        return {}
    table = {}
    for length, result in entry["lengths"].items():
        if "refused" in result:
            table[int(length)] = {"refused": str(result["refused"])}
            continue
        acc, n = float(result["acc"]), int(entry["n"])
        table[int(length)] = {
            "acc": acc,
            "ci": wilson(acc, n),
            "untrained_positions": bool(result["untrained_positions"]),
            "verdict": seed_verdict(acc, n, is_converged),
        }
    return table


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    return [read_job(sweep_dir, d) for d in job_dirs(sweep_dir)]


def varying(rows: list[dict[str, Any]]) -> list[str]:
    """Config keys whose value differs between the jobs (task and pos_enc always), seed excluded."""
    known = [r for r in rows if r["settings"]]  # a job that never started has no config to compare
    keys = {k for r in known for k in r["settings"]}
    differ = [k for k in keys if k in ALWAYS_GROUPED or len(distinct(known, k)) > 1]
    order = list(COLUMNS)
    return sorted(differ, key=lambda k: (order.index(k) if k in order else len(order), k))


def distinct(rows: list[dict[str, Any]], key: str) -> set[str]:
    return {json.dumps(r["settings"].get(key), sort_keys=True) for r in rows if r["settings"]}


def column(key: str) -> str:
    return COLUMNS.get(key, key)


def setting_of(row: dict[str, Any], keys: list[str]) -> tuple:
    """The row's values of `keys`, hashable (a list-valued setting, eval.seq_lens say, as its text)."""
    return tuple(hashable(row["settings"].get(k)) for k in keys)


def hashable(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def sort_key(setting: tuple, keys: list[str]) -> tuple:
    """Registered names in their registry's order (encodings: none first, the distance-only controls
    last; scales: none, sqrt, learned), numbers by value (8 < 16 < 128), then names."""
    out = []
    for k, v in zip(keys, setting, strict=True):
        order = REGISTRY_ORDER.get(k, [])
        if v in order:
            out.append((0, order.index(v), ""))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out.append((0, v, ""))
        else:
            out.append((1, 0, str(v)))
    return tuple(out)


def groups_of(rows: list[dict[str, Any]], keys: list[str]) -> dict[tuple, list[dict[str, Any]]]:
    """The finished jobs of each setting (the seeds), in a meaningful order."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and r.get("test/acc") is not None:
            groups[setting_of(r, keys)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: sort_key(kv[0], keys)))


def values(group: list[dict[str, Any]], metric: str) -> list[float]:
    return [float(r[metric]) for r in group if r.get(metric) is not None]


def pm(vals: list[float]) -> str:
    """'mean ± std' over seeds; '–' where there is no value, no ± for a single one."""
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def span(vals: list[Any]) -> str:
    """'8' when every seed agrees, '5–8' when not."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    lo, hi = min(vals), max(vals)
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def entropy_cell(group: list[dict[str, Any]]) -> str:
    """Mean attention entropy over seeds beside its uniform value log L: how far from uniform attention is."""
    entropy, uniform = values(group, "attn/entropy"), values(group, "attn/entropy_uniform")
    return f"{pm(entropy)} ({statistics.fmean(uniform):.2f})" if entropy and uniform else "–"


def verdict(group: list[dict[str, Any]]) -> str:
    """The cell's verdict from its seeds' (attnlab.verdict.cell_verdict)."""
    return cell_verdict([(r["seed"], r["verdict"]) for r in group])


def verdict_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The sweep's verdicts as the console shows them at its end: a line per cell (the settings that vary,
    the seeds' mean test accuracy, the verdict), columns aligned; summary.md has the whole table."""
    keys = varying(rows)
    groups = groups_of(rows, keys)
    shown = telling_apart(keys, groups)
    table = [[*(column(keys[i]) for i in shown), "n", "test/acc", "verdict"]]
    for setting, group in groups.items():
        mean = statistics.fmean(values(group, "test/acc"))
        table.append([*(str(setting[i]) for i in shown), str(len(group)), f"{mean:.3f}", verdict(group)])
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]


def telling_apart(keys: list[str], groups: dict[tuple, Any]) -> list[int]:
    """The positions of `keys` whose values differ between the groups (all of them where none does): what a
    cell's name, a panel's title or a console line needs to tell the cells apart."""
    return [i for i in range(len(keys)) if len({s[i] for s in groups}) > 1] or list(range(len(keys)))


def seeds_cell(group: list[dict[str, Any]]) -> str:
    """Each seed's test accuracy with its Wilson 95% interval."""
    return "<br>".join(f"{r['seed']}: {r['test/acc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" for r in group)


def budget_line(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The budget shared by every job (keys that vary are columns of the table instead)."""
    parts = []
    for key in ("data.n_train", "data.batch_size", "trainer.max_epochs", "early_stop.patience"):
        if key in keys:
            continue
        vals = distinct(rows, key)
        if len(vals) == 1:
            parts.append(f"{key}={vals.pop()}")
    return ", ".join(parts)


def summary_markdown(rows: list[dict[str, Any]], sweep_dir: Path) -> str:
    keys = varying(rows)
    count = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines = [
        f"# Sweep summary: `{sweep_dir}`",
        "",
        f"{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in count.items() if n or s == "ok") + ". "
        f"Test accuracy, mean ± std over seeds (n = number of seeds) for each combination of the settings "
        f"that vary between the jobs; `seeds`: each seed's accuracy with its Wilson 95% interval; chance = "
        f"{CHANCE:.2f} (balanced classes). Every number is of the run's tested checkpoint: the epoch with the "
        "lowest val/loss (`tested epoch`). `shuffled`: the same test set with positions shuffled. "
        "`attn entropy`: the tested checkpoint's mean attention entropy in nats, beside its value for uniform "
        "attention, log L.",
        "",
        f"Budget: {budget_line(rows, keys)}; `epochs` and `steps` are what the seeds trained (min–max).",
        "",
        f"Verdict: {RULE}",
        "",
        "| "
        + " | ".join([*map(column, keys), "n", "test/acc", "seeds (95% CI)", "shuffled", "verdict", "tested epoch"])
        + " | epochs | steps | attn entropy (log L) |",
        "|" + "---|" * (len(keys) + 9),
    ]
    for setting, group in groups_of(rows, keys).items():
        cells = [
            *map(str, setting),
            str(len(group)),
            pm(values(group, "test/acc")),
            seeds_cell(group),
            pm(values(group, "test/acc_shuffled")),
            verdict(group),
            span([r.get("tested_epoch") for r in group]),
            span([r.get("epochs") for r in group]),
            span([r.get("steps") for r in group]),
            entropy_cell(group),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += length_sections(rows, keys)
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["", "## Jobs without results", "", "| job | status | error |", "|---|---|---|"]
        lines += [f"| `{r['job']}` | {r['status']} | {r.get('error', '')} |" for r in bad]
    return "\n".join(lines) + "\n"


def length_cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return "–"
    if "refused" in result:
        return "untrained positions (not scored)"
    lo, hi = result["ci"]
    mark = " untrained positions" if result["untrained_positions"] else ""
    return f"{result['acc']:.3f} [{lo:.3f}, {hi:.3f}]{mark}"


def length_sections(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """A table per setting of the lengths its runs scored (evaluation.json of the tested checkpoint): per
    length the mean over seeds, each seed with its interval, and the verdict by the same rule."""
    groups = {s: g for s, g in groups_of(rows, keys).items() if any(r.get("lengths") for r in g)}
    if not groups:
        return []
    trained_at = sorted({r["settings"].get("data.seq_len") for g in groups.values() for r in g}, key=str)
    lines = [
        "",
        "## Length generalisation",
        "",
        f"The tested checkpoint of each run, trained at data.seq_len={', '.join(map(str, trained_at))}, scored on "
        "fresh test sets of other lengths (the training length: the run's own test set), each seed with its "
        "Wilson 95% interval and the verdict by the rule above. `untrained positions (not scored)`: the length "
        "reaches positions or offsets training never reached (learned, relative, symmetric), still at their "
        "random start; such a score would say nothing about what was learned.",
    ]
    for setting, group in groups.items():
        seeds = [r["seed"] for r in group]
        lengths = sorted({n for r in group for n in r.get("lengths", {})})
        lines += ["", f"### {label(keys, setting)}", ""]
        lines += ["| seq_len | mean | " + " | ".join(f"seed {s}" for s in seeds) + " | verdict |"]
        lines += ["|" + "---|" * (len(seeds) + 3)]
        for n in lengths:
            results = [r.get("lengths", {}).get(n) for r in group]
            scored = [(s, x) for s, x in zip(seeds, results, strict=True) if x is not None and "acc" in x]
            mean = f"{statistics.fmean(x['acc'] for _, x in scored):.3f}" if scored else "–"
            called = cell_verdict([(s, x["verdict"]) for s, x in scored]) if scored else "not scored"
            if scored and len(scored) < len(results):  # a seed without this length (or not of its tested checkpoint)
                called += f" ({len(scored)} of {len(results)} seeds)"
            lines.append(f"| {n} | {mean} | " + " | ".join(map(length_cell, results)) + f" | {called} |")
    return lines


def write_length_csv(rows: list[dict[str, Any]], path: Path) -> bool:
    keys = varying(rows)
    out = []
    for r in rows:
        for n, result in sorted(r.get("lengths", {}).items()):
            ci = result.get("ci", (None, None))
            out.append({
                "job": r["job"], **{column(k): r["settings"].get(k) for k in keys}, "seed": r["seed"],
                "train_seq_len": r["settings"].get("data.seq_len"), "seq_len": n, "acc": result.get("acc"),
                "ci_low": ci[0], "ci_high": ci[1], "verdict": result.get("verdict"),
                "note": "untrained positions" + (" (not scored)" if "refused" in result else "")
                if "refused" in result or result.get("untrained_positions") else "",
                "tested_epoch": r["tested_epoch"], "tested_step": r["tested_step"],
            })  # fmt: skip
    if not out:
        return False
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(out[0]))
        writer.writeheader()
        writer.writerows(out)
    return True


def plot_lengths(rows: list[dict[str, Any]], path: Path) -> bool:
    """A panel per setting: test accuracy against length, one line per seed with its 95% interval, the
    training length and chance marked, lengths with untrained positions shaded."""
    keys = varying(rows)
    groups = {s: g for s, g in groups_of(rows, keys).items() if any(r.get("lengths") for r in g)}
    if not groups:
        return False
    plt = pyplot()
    cols = min(4, len(groups))
    nrows = -(-len(groups) // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(3.6 * cols, 3.0 * nrows), squeeze=False, sharey=True, constrained_layout=True
    )
    # each panel titled by what tells it from the others
    shown = telling_apart(keys, groups)
    for ax, (setting, group) in zip(axes.flat, groups.items(), strict=False):
        all_lengths = sorted({n for r in group for n in r["lengths"]})
        for i, r in enumerate(group):
            scored = [(n, x) for n, x in sorted(r["lengths"].items()) if "acc" in x]
            if scored:
                xs, accs = [n for n, _ in scored], [x["acc"] for _, x in scored]
                err = [[x["acc"] - x["ci"][0] for _, x in scored], [x["ci"][1] - x["acc"] for _, x in scored]]
                ax.errorbar(
                    xs, accs, yerr=err, marker="o", markersize=3, capsize=2, color=f"C{i}", label=f"seed {r['seed']}"
                )
        refused = sorted({n for r in group for n, x in r["lengths"].items() if "refused" in x})
        if refused:
            ax.axvspan(refused[0] / 1.3, refused[-1] * 1.3, color="0.9", label="untrained positions")
        train_len = group[0]["settings"].get("data.seq_len")
        ax.axvline(train_len, color="tab:red", linestyle="--", linewidth=1, label="training length")
        ax.axhline(CHANCE, color="gray", linestyle=":", label="chance")
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_lengths, [str(n) for n in all_lengths], fontsize=7)
        ax.set_ylim(0.3, 1.02)
        ax.set_title(", ".join(f"{column(keys[i])}={setting[i]}" for i in shown), fontsize=8)
        ax.set_xlabel("sequence length", fontsize=8)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("test accuracy (95% CI)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="outside lower center", ncols=min(len(names), 6))
    fig.suptitle(f"length generalisation of the tested checkpoints; {budget_title(rows, keys)}", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    extra = [column(k) for k in varying(rows) if k not in COLUMNS]  # any other key the sweep varies
    for r in rows:
        r.update({column(k): r["settings"].get(k) for k in varying(rows) if k not in COLUMNS})
    columns = ["job", "status", *COLUMNS.values(), *extra, "seed", *BUDGET, *METRICS, *VERDICT, *DIAGNOSTICS]
    columns += ["fit_seconds", "error"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def label(keys: list[str], setting: tuple) -> str:
    return ", ".join(f"{column(k)}={v}" for k, v in zip(keys, setting, strict=True))


def min_max(vals: list[float]) -> tuple[float, float, float]:
    """(mean, mean - min, max - mean): an error bar over the seeds, never past what they gave."""
    m = statistics.fmean(vals)
    return m, m - min(vals), max(vals) - m


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def budget_title(rows: list[dict[str, Any]], keys: list[str]) -> str:
    oks = [r for r in rows if r["status"] == "ok"]
    seeds = sorted({r["seed"] for r in oks}, key=str)
    return f"{budget_line(rows, keys)}; epochs trained {span([r.get('epochs') for r in oks])}; seeds {seeds}"


def plot_lines(rows, x: str, metric: str, path: Path, ylabel: str, reference: str | None = None) -> bool:
    """Mean of `metric` against config key `x`, min–max over seeds, one line per combination of every
    other setting that varies (never averaged over a setting)."""
    keys = varying(rows)
    if x not in keys or len(distinct(rows, x)) < 2:
        return False
    others = [k for k in keys if k != x and len(distinct(rows, k)) > 1]
    lines: dict[tuple, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] == "ok" and r.get(metric) is not None:
            lines[setting_of(r, others)][r["settings"][x]].append(float(r[metric]))
    if not lines:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    for setting in sorted(lines, key=lambda s: sort_key(s, others)):
        points = lines[setting]
        xs = sorted(points)
        stats = [min_max(points[v]) for v in xs]
        ax.errorbar(
            xs,
            [m for m, _, _ in stats],
            yerr=[[lo for _, lo, _ in stats], [hi for _, _, hi in stats]],
            marker="o",
            capsize=3,
            label=label(others, setting),
        )
    if reference:
        ref: dict[Any, list[float]] = defaultdict(list)
        for r in rows:
            if r["status"] == "ok" and r.get(reference) is not None:
                ref[r["settings"][x]].append(float(r[reference]))
        xs = sorted(ref)
        ax.plot(xs, [statistics.fmean(ref[v]) for v in xs], "k--", label="uniform attention (log L)")
    if metric.endswith("acc"):
        ax.axhline(CHANCE, color="gray", linestyle=":", label="chance")
        ax.set_ylim(0.3, 1.02)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(x)
    ax.set_ylabel(f"{ylabel} (mean, min–max over seeds)")
    fig.suptitle(budget_title(rows, keys), fontsize=8)
    fig.legend(fontsize=7, loc="outside right center")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_bars(rows, path: Path) -> bool:
    """Per task, test accuracy beside the accuracy on position-shuffled sequences for each encoding
    (and any other setting that varies), mean with min–max over seeds and each seed as a dot."""
    keys = varying(rows)
    groups = groups_of(rows, keys)
    if not groups:
        return False
    plt = pyplot()
    tasks = sorted({s[0] for s in groups})
    rest = keys[1:]  # pos_enc, then anything else that varies
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(max(6.0, 0.9 * len(groups) + 3), 4.2), squeeze=False, constrained_layout=True
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        settings = [s for s in groups if s[0] == task]
        for offset, metric, name in ((-0.2, "test/acc", "test/acc"), (0.2, "test/acc_shuffled", "positions shuffled")):
            for i, s in enumerate(settings):
                vals = values(groups[s], metric)
                if not vals:
                    continue
                m, lo, hi = min_max(vals)
                color = "C0" if metric == "test/acc" else "C1"
                ax.bar(i + offset, m, 0.4, yerr=[[lo], [hi]], capsize=3, color=color, label=name if i == 0 else None)
                ax.plot([i + offset] * len(vals), vals, "k.", markersize=3)
        for i, s in enumerate(settings):
            ax.text(i, 1.01, verdict(groups[s]), ha="center", va="bottom", fontsize=7)
        ax.axhline(CHANCE, color="gray", linestyle=":", label="chance", zorder=3)
        ax.set_xticks(range(len(settings)), ["\n".join(map(str, s[1:])) for s in settings], fontsize=8)
        ax.set_xlabel(" / ".join(map(column, rest)))
        ax.set_ylim(0, 1.08)
        ax.set_title(f"task={task}")
    axes[0][0].set_ylabel("accuracy (mean, min–max over seeds)")
    fig.suptitle(budget_title(rows, keys), fontsize=8)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="outside lower center", ncols=3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def board_cells(rows: list[dict[str, Any]], sweep_dir: Path) -> list[dict[str, Any]]:
    """The study view's cells (attnlab.board): named by the settings that tell them apart."""
    keys = varying(rows)
    groups = groups_of(rows, keys)
    shown = telling_apart(keys, groups)
    cells = []
    for setting, group in groups.items():
        name = ",".join(f"{column(keys[i])}={setting[i]}" for i in shown)
        seeds = seeds_cell(group).replace("<br>", "  \n")
        cells.append({
            "name": safe_dirname(name),
            "hparams": {column(keys[i]): setting[i] for i in shown},
            "jobs": [sweep_dir / r["job"] for r in group],
            "metrics": {m: statistics.fmean(values(group, m)) for m in (*BOARD_METRICS, "attn/entropy_uniform")
                        if values(group, m)},
            "text": f"**{name}**: {verdict(group)} (tested epochs {span([r.get('tested_epoch') for r in group])})"
                    f"  \n{seeds}",
        })  # fmt: skip
    return cells


def write_report(sweep_dir: str | Path) -> list[dict[str, Any]]:
    sweep_dir = Path(sweep_dir)
    run_folder.check_no_links_out(sweep_dir, "sweep", depth=0)  # the report's files and the jobs it reads stay inside
    rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no job folders (with .hydra/config.yaml) under {sweep_dir}")
    write_csv(rows, sweep_dir / "results.csv")
    summary = summary_markdown(rows, sweep_dir)
    (sweep_dir / "summary.md").write_text(summary)
    write_board(sweep_dir, board_cells(rows, sweep_dir), summary)
    plot_bars(rows, sweep_dir / "acc_by_task_pos_enc.png")
    if write_length_csv(rows, sweep_dir / "length_generalization.csv"):
        plot_lengths(rows, sweep_dir / "length_generalization.png")
    plot_lines(rows, "data.seq_len", "test/acc", sweep_dir / "acc_vs_seq_len.png", "test accuracy")
    plot_lines(
        rows,
        "model.d_model",
        "attn/entropy",
        sweep_dir / "entropy_vs_d_model.png",
        "attention entropy (nats)",
        reference="attn/entropy_uniform",
    )
    return rows


def conclude(sweep_dir: Path, code: int, began: float) -> int:
    """The end of a sweep, however it ended: write the report, print the verdicts and how many jobs finished
    (and how to continue the others); returns the sweep's exit code: `code` (a signal's, the launcher's)
    where set, else 0 only when every job finished."""
    from attnlab.timing import process_seconds  # here: it imports Lightning, which scripts/report.py needs not

    try:
        rows = write_report(sweep_dir)
    except Exception as e:  # the report must not hide the outcome: say so, and fail
        print(f"error: the report could not be written: {type(e).__name__}: {e}", file=sys.stderr)
        return code or 1
    bad = [r for r in rows if r["status"] != "ok"]
    seconds = process_seconds(began)  # from process start: imports and the up-front checks included
    failed = f", {len(bad)} did not finish" if bad else ""
    print("\n".join(verdict_lines(rows)), flush=True)
    print(
        f"[attnlab] sweep done in {seconds:.1f} s: {len(rows) - len(bad)}/{len(rows)} jobs ok{failed}\n"
        f"[attnlab] report: {sweep_dir / 'summary.md'}\n"
        f"[attnlab] curves: tensorboard --logdir {shlex.quote(str(sweep_dir / 'tensorboard'))}",
        flush=True,
    )
    for r in bad:
        print(f"[attnlab] {r['status']}: {r['job']} {r.get('error', '')}".rstrip(), file=sys.stderr)
    if bad:
        print(f"[attnlab] continue with: {continue_command(sweep_dir, sweep=True)}", file=sys.stderr)
    return code or (1 if bad else 0)
