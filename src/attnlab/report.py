"""A sweep's report, written into its folder when the sweep ends, however it ends, and by `python
scripts/report.py <sweep dir>` (README: "Studies and sweeps"): results.csv, a row per planned job, none dropped;
summary.md, a row per combination of the settings that vary (any key but `seed`: never averaged as if seeds);
length_generalization.csv / .png; the study view (attnlab.board); plots, whose error bars are the seeds' min-max.
"""

import csv
import json
import math
import os
import re
import shlex
import statistics
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from attnlab import run_folder
from attnlab.board import FOLDER as BOARD_FOLDER
from attnlab.board import METRICS as BOARD_METRICS
from attnlab.board import curves, write_board
from attnlab.config import keys_of_kind, run_config
from attnlab.errors import ConfigError, printable
from attnlab.evaluate import EVALUATION, read_evaluation
from attnlab.naming import KEY_SETTINGS, canonical, flatten, job_dirname
from attnlab.pooling import POOLINGS
from attnlab.posenc import POS_ENCODINGS
from attnlab.resume import RESUMABLE
from attnlab.scaling import SCALES
from attnlab.sweep_record import read_jobs
from attnlab.verdict import CHANCE, RULE, cell_verdict, converged, seed_verdict, wilson

COLUMNS = {key: name for name, key in KEY_SETTINGS.items() if name != "seed"}  # config key -> column name
ALWAYS_GROUPED = ("data.task", "model.pos_enc")
REGISTRY_ORDER = {"model.pos_enc": POS_ENCODINGS.names(), "model.scale": SCALES.names(), "model.pool": POOLINGS.names()}
# never grouped: keys that do not change what a job computes, or differ by construction (model.dim is data.dim)
NOT_SETTINGS = {"seed", "model.dim", "output_dir", "resume", *keys_of_kind("display")}
NOT_A_CELL = {"seed", "resume", *RESUMABLE}  # overrides a cell's jobs may differ in (a continuation's budget)
# of the tested checkpoint, but val/acc_best (the whole run) and train/acc_last (the last epoch's: not the tested one's)
METRICS = ["val/acc_best", "test/acc", "test/acc_shuffled", "test/loss", "train/acc_last"]
BUDGET = ["epochs", "steps", "ended_by", "converged", "tested_epoch", "tested_step"]
VERDICT = ["n_test", "ci_low", "ci_high", "verdict"]
DIAGNOSTICS = ["attn/entropy", "attn/entropy_uniform", "attn/max_prob", "attn/score_std"]
STATUSES = ("ok", "failed", "interrupted", "unfinished", "not started")
NOT_SCORED = "untrained positions (not scored)"
REPORT_FILES = {"results.csv", "summary.md", "acc_by_task_pos_enc.png", "length_generalization.csv",
                "length_generalization.png", "acc_vs_seq_len.png", "entropy_vs_d_model.png"}  # fmt: skip
Rows = list[dict[str, Any]]


def collect(sweep_dir: Path) -> Rows:
    """A row per planned job (attnlab.sweep_record), then per job folder found on disk besides (a moved one,
    or one planned by a record cut short)."""
    jobs = read_jobs(sweep_dir)
    planned = [sweep_dir / job["dir"] for job in jobs]
    found = set()
    for here, folders, files in os.walk(sweep_dir):  # (a folder gone meanwhile is passed over, where rglob raises)
        # not into the study view nor a report's work folder: a report beside this one renames and deletes them
        folders[:] = [f for f in folders if f != BOARD_FOLDER and not f.startswith(run_folder.STAGING)]
        if here.endswith(f"{os.sep}.hydra") and "config.yaml" in files:
            found.add(Path(here).parent)
    job_dirs, root = planned + sorted(found - set(planned)), sweep_dir.resolve()
    for job_dir in job_dirs:  # what it reads of a job (at any depth) stays inside the sweep
        if job_dir.exists():
            if not job_dir.resolve().is_relative_to(root):
                raise ConfigError("sweep", str(sweep_dir), f"holds a link to outside it ({job_dir})")
            run_folder.check_no_links_out(job_dir, "sweep", depth=1)
    rows = [read_job(sweep_dir, d) for d in job_dirs]
    for row, job in zip(rows, jobs, strict=False):  # (the planned come first)
        row["overrides"] = job["overrides"]
    first: dict[str, str] = {}  # a finished job's config and seed -> the first job folder with them
    for row in (r for r in rows if r["status"] == "ok"):
        if (same := first.setdefault(canonical([row["settings"], row["seed"]]), row["job"])) != row["job"]:
            # a copy of a job folder (a backup beside it) would count its seed twice in the cell's mean and verdict;
            # a planned job can differ only in display settings (a grid over `progress`): the same training too
            how = "but for display settings" if "overrides" in row else "(a copy?)"
            note = f"the same config and seed as {same} {how}: counted once"
            row["duplicate_of"], row["note"] = same, "; ".join(filter(None, [note, row.get("note")]))
    return rows


def read_job(sweep_dir: Path, job_dir: Path) -> dict[str, Any]:
    unread = ""
    try:
        settings = flatten(run_config(job_dir))
    except ConfigError as e:  # no config: never started (or its config is gone), a row all the same
        settings = {}
        if (job_dir / run_folder.CONFIG).is_file():
            unread = e.allowed  # "its config.json does not load (why)"
    # (a name that is not UTF-8, found on disk, shown escaped: the tables are UTF-8)
    row = {"job": str(job_dir.relative_to(sweep_dir)).encode("utf-8", "surrogateescape").decode("utf-8", "replace")}
    row["settings"] = {k: v for k, v in settings.items() if k not in NOT_SETTINGS}
    row.update({col: settings.get(key) for key, col in COLUMNS.items()}, seed=settings.get("seed"))
    if not settings:
        row["status"], reason = run_folder.status(job_dir) if job_dir.exists() else ("not started", "")
        if unread or row["status"] == "ok":  # (results without the config they came from are no results)
            row["status"], reason = "failed", unread or f"its {run_folder.CONFIG} is missing"
        if reason:
            row["error"] = reason
        return row
    row["status"], reason = run_folder.status(job_dir)
    if row["status"] == "ok":
        try:
            row.update(read_results(job_dir, settings))
        except (KeyError, TypeError, ValueError, AttributeError, OSError, RecursionError) as e:  # a crafted record
            row["status"], reason = "failed", f"its results do not read ({type(e).__name__}: {e})"
    if reason:
        row["error"] = reason
    return row


def read_results(job_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    metrics = json.loads((job_dir / run_folder.METRICS).read_text())
    diagnostics = metrics.get("diagnostics") or {}
    read = {k: metrics.get(k) for k in METRICS} | {k: diagnostics.get(k) for k in DIAGNOSTICS}
    row: dict[str, Any] = {k: None if v is None else number(v, k) for k, v in read.items()}
    if train_acc := metrics["history"].get("train/acc"):
        row["train/acc_last"] = number(train_acc[-1], "train/acc")
    row["curves"] = curves(metrics["history"])  # (the study view's)
    tested = metrics["tested_checkpoint"]
    row.update(epochs=whole(metrics["epochs"]), steps=whole(metrics["global_step"]), ended_by=str(metrics["ended_by"]))
    row.update(tested_epoch=whole(tested["epoch"]), tested_step=whole(tested["global_step"]))
    row["final_weights"] = tested["file"] is None  # no checkpoint was saved (no validation ran; fast_dev_run)
    row["started_from"] = metrics.get("started_from") is not None  # ckpt_path: its epochs count on from there
    commit = (metrics.get("provenance") or {}).get("git_commit")  # the code that made it (a record: hex only)
    row["commit"] = commit[:12] if isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{7,64}", commit) else None
    n, acc, done = whole(metrics["test_sequences"], 1), number(metrics["test/acc"], "test/acc"), metrics["converged"]
    if not isinstance(done, bool):
        raise TypeError(f"converged is {done!r}, not true or false")
    # A verdict rests on these two: checked against the run's own config and history, not taken on trust.
    if n > settings["data.n_test"]:
        raise ValueError(f"test_sequences is {n}, more than its data.n_test ({settings['data.n_test']})")
    rule = converged(metrics["history"]["val/loss"], settings["early_stop.patience"], settings["early_stop.min_delta"])
    if done is not rule:
        raise ValueError(f"converged is {done!r}, but its val/loss history says {rule} (the rule: attnlab.verdict)")
    row.update(converged=done, n_test=n, verdict=seed_verdict(acc, n, done), fit_seconds=metrics.get("fit_seconds"))
    row["ci_low"], row["ci_high"] = wilson(acc, n)
    try:
        row["lengths"] = joined_lengths(job_dir, tested, done)
    except ConfigError as e:  # the run's own results stand; only its evaluation is left out, and said so
        row["lengths"], row["note"] = {}, f"{EVALUATION} left out: {e.allowed}"
    return row


# An entropy in nats of attention over at most 2^64 positions (the study view draws uniform attention's exp(it))
MAX_ENTROPY = 64 * math.log(2)


def number(value: Any, key: str) -> float:
    """A record's number: finite, not a bool, an accuracy in [0, 1], an entropy in [0, MAX_ENTROPY]; else ValueError."""
    low, high = (0, 1) if "acc" in key else (0, MAX_ENTROPY) if "entropy" in key else (-math.inf, math.inf)
    plain = isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e300  # (10**400 too)
    if not plain or not low <= value <= high:
        what = "an accuracy" if high == 1 else "an entropy" if high == MAX_ENTROPY else "a finite number"
        raise ValueError(f"{key} is {value!r}, not {what}")
    return float(value)


def whole(value: Any, least: int = 0) -> int:
    """A whole number >= least from a record (epochs, steps, sequences); else ValueError."""
    if type(value) is not int or value < least:
        raise ValueError(f"{value!r} is not a whole number >= {least}")
    return value


def joined_lengths(job_dir: Path, tested: dict[str, Any], done: bool) -> dict[int, dict[str, Any]]:
    """{seq_len: its row of length_generalization.csv} from the job's evaluation.json: the newest table of the
    checkpoint the job tested, current or earlier (another checkpoint's numbers would be another model's)."""
    entry = read_evaluation(job_dir / EVALUATION)
    same = ("file", "epoch", "global_step")
    tables = [entry, *reversed(entry.get("earlier", []))] if entry else []
    entry = next((t for t in tables if [t["checkpoint"].get(k) for k in same] == [tested.get(k) for k in same]), {})
    if tables and not entry:  # (a resume trained on since): said, not dropped unsaid
        at = "{file}, epoch {epoch}, step {global_step}".format
        which = "; ".join(at(**t["checkpoint"]) for t in tables)
        why = f"scores other checkpoints ({which}), not the tested one ({at(**tested)}): evaluate that one"
        raise ConfigError("evaluation", str(job_dir / EVALUATION), why)
    table = {}
    for length, result in entry.get("lengths", {}).items():
        scored = {"acc": None, "ci_low": None, "ci_high": None, "n": entry["n"], "verdict": None, "note": NOT_SCORED}
        if "refused" not in result:  # the interval and the verdict recomputed from the accuracy and the count
            acc, n = float(result["acc"]), entry["n"]
            scored.update(acc=acc, verdict=seed_verdict(acc, n, done))
            scored["ci_low"], scored["ci_high"] = wilson(acc, n)
            scored["note"] = "untrained positions" if result["untrained_positions"] else ""
        table[int(length)] = scored
    return table


def varying(rows: Rows) -> list[str]:
    """Config keys whose value differs between the jobs (task and pos_enc always), in the table's order."""
    keys = {k for r in rows for k in r["settings"]}  # a job that never started has no config to compare
    order = {k: i for i, k in enumerate(COLUMNS)}
    differ = [k for k in keys if k in ALWAYS_GROUPED or len(distinct(rows, k)) > 1]
    return sorted(differ, key=lambda k: (order.get(k, len(order)), k))


def distinct(rows: Rows, key: str) -> set[str]:
    """The values of `key` among the jobs that started, as JSON text (1 and 1.0 differ; None is null)."""
    return {canonical(r["settings"].get(key)) for r in rows if r["settings"]}


def column(key: str) -> str:
    return printable(COLUMNS.get(key, key))  # (a record's `+trainer.X` key is text it chose)


def label(keys: list[str], setting: tuple, shown: list[int] | None = None, sep: str = ", ") -> str:
    return sep.join(f"{column(keys[i])}={printable(setting[i])}" for i in (shown or range(len(keys))))


def groups_of(rows: Rows, keys: list[str]) -> dict[tuple, Rows]:
    """The finished jobs of each setting (its seeds), keyed by their values of `keys` (a list as its text): names
    a registry lists in its order (encodings: the distance-only controls last), numbers by value, then names."""
    groups: dict[tuple, Rows] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok" and "duplicate_of" not in r:
            groups[setting_of(r, keys)].append(r)

    def rank(key: str, value: Any) -> tuple:
        order = REGISTRY_ORDER.get(key, [])
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        return (0, order.index(value)) if value in order else (0, value) if is_number else (1, str(value))

    return dict(sorted(groups.items(), key=lambda kv: tuple(map(rank, keys, kv[0]))))


class Setting(tuple):
    """A cell's values of the keys that vary, equal when equal as JSON: to a tuple 1, 1.0 and true are one value,
    to Lightning two or three (`+trainer.limit_test_batches=1,1.0`: one batch, all of them)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, tuple) and canonical(list(self)) == canonical(list(other))

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(canonical(list(self)))


def setting_of(row: dict[str, Any], keys: list[str]) -> Setting:
    return Setting(json.dumps(v) if isinstance(v, list | dict) else v for v in map(row["settings"].get, keys))


def telling_apart(keys: list[str], groups: dict[tuple, Any]) -> list[int]:
    """The positions of `keys` whose values differ between the groups (all where none does): what names a cell."""
    return [i for i in range(len(keys)) if len({canonical(s[i]) for s in groups}) > 1] or list(range(len(keys)))


def values(group: Rows, metric: str) -> list[float]:
    return [float(r[metric]) for r in group if r.get(metric) is not None]


def mean_std(vals: list[float]) -> str:
    """'mean ± std' over seeds; '–' where there is no value, no ± for a single one."""
    if len(vals) < 2:
        return f"{vals[0]:.3f}" if vals else "–"
    return f"{statistics.fmean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def value_range(rows: Rows, key: str) -> str:
    """'8' when every seed agrees, '5–8' when not."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    lo, hi = (min(vals), max(vals)) if vals else ("–", "–")
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def min_max(vals: list[float]) -> tuple[float, float, float]:
    """(mean, mean - min, max - mean): an error bar over the seeds, never past what they gave."""
    m = statistics.fmean(vals)
    return m, m - min(vals), max(vals) - m


def verdict(group: Rows, planned: int = 0) -> str:
    """The cell's verdict, saying on how many seeds where fewer than `planned` finished."""
    called = cell_verdict([(r["seed"], r["verdict"]) for r in group])
    return f"{called} ({len(group)} of {planned} seeds finished)" if len(group) < planned else called


def planned_jobs(rows: Rows, keys: list[str]) -> Counter:
    """Each cell's planned jobs: those that started, by their config; those that never did, by their overrides
    (jobs.json), beside a started job with the same ones but the seed, `resume` and a budget."""

    def but_seed(row: dict[str, Any]) -> frozenset[str]:  # (and what a continuation may have given its jobs anew)
        return frozenset(o for o in row.get("overrides", ()) if o.split("=", 1)[0].lstrip("+~") not in NOT_A_CELL)

    cell_of = {but_seed(r): setting_of(r, keys) for r in rows if r["settings"] and "overrides" in r}
    jobs = [r for r in rows if "duplicate_of" not in r]
    return Counter(setting_of(r, keys) if r["settings"] else cell_of.get(but_seed(r)) for r in jobs)


def score(x: dict[str, Any], acc: str = "acc") -> str:
    return f"{x[acc]:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}]"


def cut_test(row: dict[str, Any]) -> str:
    """` of <n>` where a finished job's test scored fewer sequences than its data.n_test, else ""."""
    return f" of {row['n_test']}" if row["n_test"] != row["settings"]["data.n_test"] else ""


def budget_line(rows: Rows, keys: list[str]) -> str:
    """The budget shared by every job (keys that vary are columns of the table instead)."""
    budget = ("data.n_train", "data.batch_size", "trainer.max_epochs", "early_stop.patience", "early_stop.min_delta",
              "data.n_test")  # fmt: skip
    shared = {key: distinct(rows, key) for key in budget if key not in keys}
    return ", ".join(f"{key}={vals.pop()}" for key, vals in shared.items() if len(vals) == 1) or "none recorded"


def code_line(rows: Rows) -> str:
    """The commits the finished jobs were trained with (their metrics.json's provenance)."""
    commits = Counter(r.get("commit") or "unknown (not a git checkout)" for r in rows if r["status"] == "ok")
    if not commits:
        return "no job finished"
    if len(commits) == 1:
        return f"every finished job at commit `{next(iter(commits))}`"
    return "jobs at different commits: " + ", ".join(f"`{commit}` ({n} jobs)" for commit, n in commits.items())


def markdown_table(header: list[str], body: list[list[Any]]) -> list[str]:
    lines = [
        "| " + " | ".join(printable(cell).replace("|", "\\|") for cell in cells) + " |" for cells in [header, *body]
    ]
    return [lines[0], "|" + "---|" * len(header), *lines[1:]]


def summary_markdown(rows: Rows, keys: list[str], groups: dict[tuple, Rows], scored: dict, sweep_dir: Path) -> str:
    count = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    final = sum(bool(r.get("final_weights")) for r in rows)  # no validation ran, or fast_dev_run
    final_note = f" {final} of the jobs saved no checkpoint (no validation ran; fast_dev_run): final weights."
    started = sum(bool(r.get("started_from")) for r in rows)  # runs from another run's checkpoint (ckpt_path)
    later = f"; {started} of the jobs started from another run's checkpoint and count on from it" if started else ""
    if cut := sum(r["status"] == "ok" and bool(cut_test(r)) for r in rows):  # the interval is over what was scored
        later += f"; {cut} of the jobs' tests scored fewer than data.n_test (trainer.limit_test_batches): `of n`"
    lines = [
        f"# Sweep summary: `{printable(sweep_dir)}`",
        "",
        f"{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in count.items() if n or s == "ok") + ". "
        f"Test accuracy, mean ± std over seeds (n = number of seeds) for each combination of the settings "
        f"that vary between the jobs; `seeds`: each seed's accuracy with its Wilson 95% interval; chance = "
        f"{CHANCE:.2f} (balanced classes). Every number is of the run's tested checkpoint: the epoch with the "
        "lowest val/loss (`tested epoch`). `shuffled`: the same test set with positions shuffled. "
        "`attn entropy`: the tested checkpoint's mean attention entropy in nats, beside its value for uniform "
        f"attention, log L.{final_note if final else ''}",
        "",
        f"Budget: {budget_line(rows, keys)}; `epochs` and `steps` are what the seeds trained (min–max){later}.",
        "",
        f"Code: {code_line(rows)}.",
        "",
        f"Verdict: {RULE}",
        "",
    ]
    header = [*map(column, keys), "n", "test/acc", "seeds (95% CI)", "shuffled", "verdict", "tested epoch"]
    body, planned = [], planned_jobs(rows, keys)
    for setting, group in groups.items():
        entropy, uniform = values(group, "attn/entropy"), values(group, "attn/entropy_uniform")
        entropy_cell = f"{mean_std(entropy)} ({statistics.fmean(uniform):.2f})" if entropy and uniform else "–"
        acc, shuffled = mean_std(values(group, "test/acc")), mean_std(values(group, "test/acc_shuffled"))
        spans = [value_range(group, k) for k in ("tested_epoch", "epochs", "steps")]
        seeds = "<br>".join(f"{r['seed']}: {score(r, 'test/acc')}" + cut_test(r) for r in group)
        called = verdict(group, planned[setting])
        body.append([*setting, len(group), acc, seeds, shuffled, called, *spans, entropy_cell])
    lines += markdown_table([*header, "epochs", "steps", "attn entropy (log L)"], body)
    if scored:  # a table per setting whose runs scored other lengths: per length each seed, the mean, the verdict
        trained_at = sorted({r["settings"].get("data.seq_len") for g in scored.values() for r in g}, key=str)
        lines += [
            "",
            "## Length generalisation",
            "",
            f"The tested checkpoint of each run, trained at data.seq_len={', '.join(map(str, trained_at))}, scored on "
            "fresh test sets of other lengths (the training length: the run's own test set, unless eval.n was not "
            "data.n_test or the run's test scored a part of it: trainer.limit_test_batches), each seed with its "
            f"Wilson 95% interval and the verdict by the rule above. `{NOT_SCORED}`: the length reaches positions or "
            "offsets training never reached (learned, relative, symmetric), still at their random start; such a "
            "score would say nothing about what was learned.",
        ]
    for setting, group in scored.items():
        body = []
        for n in sorted({n for r in group for n in r["lengths"]}):
            results = [r["lengths"].get(n, {"acc": None, "note": "–"}) for r in group]  # "–": a seed without it
            seeds = [(r["seed"], x) for r, x in zip(group, results, strict=True) if x["acc"] is not None]
            mean = f"{statistics.fmean(x['acc'] for _, x in seeds):.3f}" if seeds else "–"
            called = cell_verdict([(s, x["verdict"]) for s, x in seeds]) if seeds else "not scored"
            if seeds and len(seeds) < len(results):  # a seed without this length (or not of its tested checkpoint)
                called += f" ({len(seeds)} of {len(results)} seeds)"
            if any(x["note"] for _, x in seeds):  # scored anyway (eval.untrained=mark): so are the mean and verdict
                called += " (untrained positions)"
            cells = [x["note"] if x["acc"] is None else f"{score(x)} {x['note']}".rstrip() for x in results]
            counts = "/".join(map(str, sorted({x["n"] for _, x in seeds}))) or "–"  # sequences per seed
            body.append([n, counts, mean, *cells, called])
        lines += ["", f"### {label(keys, setting)}", ""]
        lines += markdown_table(["seq_len", "n", "mean", *(f"seed {r['seed']}" for r in group), "verdict"], body)
    bad = [[f"`{r['job']}`", r["status"], r.get("error", "")] for r in rows if r["status"] != "ok"]
    if bad:
        lines += ["", "## Jobs without results", "", *markdown_table(["job", "status", "error"], bad)]
    if notes := [[f"`{r['job']}`", r["note"]] for r in rows if r.get("note")]:
        lines += ["", "## Left out of the tables above", "", *markdown_table(["job", "why"], notes)]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Rows, columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def figure(*grid: int, figsize: tuple[float, float], **kw: Any) -> tuple[Any, Any]:
    """A figure and its axes as plt.subplots gives them, without pyplot (no backend to pick, none to close)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, constrained_layout=True)
    return fig, fig.subplots(*grid, **kw)


def save(fig: Any, path: Path, rows: Rows, keys: list[str], title: str = "", **legend: Any) -> None:
    """The figure to `path`, titled (`title`, then the budget), with one legend for all panels."""
    oks = [r for r in rows if r["status"] == "ok"]
    seeds = sorted({r["seed"] for r in oks}, key=str)
    text = f"{title}{budget_line(rows, keys)}; epochs trained {value_range(oks, 'epochs')}; seeds {seeds}"
    fig.suptitle(textwrap.fill(text, int(fig.get_figwidth() * 15)), fontsize=8)  # wrapped: never cut at the edges
    handles = {label: h for ax in fig.axes for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(list(handles.values()), list(handles), **legend)  # each label once, from whichever panel has it
    fig.savefig(path, dpi=110)


def plot_lengths(rows: Rows, keys: list[str], groups: dict[tuple, Rows], path: Path) -> None:
    """A panel per setting whose runs scored other lengths: a line per seed, lengths with untrained positions shaded."""
    cols = min(4, len(groups))
    nrows = -(-len(groups) // cols)
    fig, axes = figure(nrows, cols, figsize=(3.6 * cols, 3.0 * nrows), squeeze=False, sharey=True)
    shown = telling_apart(keys, groups)  # each panel titled by what tells it from the others
    for ax, (setting, group) in zip(axes.flat, groups.items(), strict=False):
        for i, r in enumerate(group):
            if scored := [(n, x) for n, x in sorted(r["lengths"].items()) if x["acc"] is not None]:
                acc = [x["acc"] for _, x in scored]
                yerr = [[x["acc"] - x["ci_low"] for _, x in scored], [x["ci_high"] - x["acc"] for _, x in scored]]
                style = {"marker": "o", "markersize": 3, "capsize": 2, "color": f"C{i}", "label": f"seed {r['seed']}"}
                ax.errorbar([n for n, _ in scored], acc, yerr=yerr, **style)
            if marked := [(n, x["acc"]) for n, x in scored if x["note"]]:  # scored anyway (eval.untrained=mark)
                marks = {"mfc": "white", "color": "tab:red", "markersize": 6, "label": "untrained positions (scored)"}
                ax.plot(*zip(*marked, strict=True), "o", **marks)
        if refused := sorted({n for r in group for n, x in r["lengths"].items() if x["acc"] is None}):
            ax.axvspan(refused[0] / 1.3, refused[-1] * 1.3, color="0.9", label="untrained positions")
        train_len = group[0]["settings"].get("data.seq_len")
        ax.axvline(train_len, color="tab:red", linestyle="--", linewidth=1, label="training length")
        ax.axhline(CHANCE, color="gray", linestyle=":", label="chance")
        ax.set_xscale("log", base=2)
        all_lengths = sorted({n for r in group for n in r["lengths"]})
        ax.set_xticks(all_lengths, [str(n) for n in all_lengths], fontsize=7)
        ax.set_ylim(0.3, 1.02)
        ax.set_title(label(keys, setting, shown), fontsize=8)
        ax.set_xlabel("sequence length", fontsize=8)
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("test accuracy (95% CI)")
    title = "length generalisation of the tested checkpoints; "
    save(fig, path, rows, keys, title, fontsize=7, loc="outside lower center", ncols=6)  # fewer entries: fewer columns


def plot_lines(rows: Rows, keys: list[str], x: str, metric: str, path: Path, ylabel: str, reference: str = "") -> bool:
    """Mean of `metric` against `x` where it varies, min–max over seeds, a line per combination of every other
    setting that varies (never averaged over a setting); `reference`: a dashed line's metric. Whether it drew any."""
    if x not in keys:
        return False
    others = [k for k in keys if k != x and len(distinct(rows, k)) > 1]
    lines: dict[tuple, dict[Any, list[float]]] = defaultdict(dict)
    ref: dict[Any, list[float]] = defaultdict(list)
    for (*setting, at), group in groups_of(rows, [*others, x]).items():
        if vals := values(group, metric):
            lines[tuple(setting)][at] = vals
        ref[at] += values(group, reference)  # none without a reference
    if not lines:
        return False
    fig, ax = figure(figsize=(8, 4.5))
    for setting, points in lines.items():
        means, below, above = zip(*map(min_max, points.values()), strict=True)
        ax.errorbar(list(points), means, yerr=[below, above], marker="o", capsize=3, label=label(others, setting))
    if xs := [at for at in sorted(ref) if ref[at]]:
        ax.plot(xs, [statistics.fmean(ref[at]) for at in xs], "k--", label="uniform attention (log L)")
    if metric.endswith("acc"):
        ax.axhline(CHANCE, color="gray", linestyle=":", label="chance")
        ax.set_ylim(0.3, 1.02)
    ax.set_xscale("log", base=2)
    ax.set(xlabel=x, ylabel=f"{ylabel} (mean, min–max over seeds)")
    save(fig, path, rows, keys, fontsize=7, loc="outside right center")
    return True


def plot_bars(rows: Rows, keys: list[str], groups: dict[tuple, Rows], path: Path) -> None:
    """Per task and setting, test accuracy beside shuffled accuracy: mean, min–max over seeds, each seed a dot."""
    tasks = sorted({s[0] for s in groups})
    fig, axes = figure(1, len(tasks), figsize=(max(6.0, 0.9 * len(groups) + 3), 4.2), squeeze=False)
    bars = ((-0.2, "test/acc", "test/acc", "C0"), (0.2, "test/acc_shuffled", "positions shuffled", "C1"))
    for ax, task in zip(axes[0], tasks, strict=True):
        settings = [s for s in groups if s[0] == task]
        for i, s in enumerate(settings):
            for offset, metric, name, color in bars:
                if vals := values(groups[s], metric):
                    m, lo, hi = min_max(vals)
                    ax.bar(i + offset, m, 0.4, yerr=[[lo], [hi]], capsize=3, color=color, label=None if i else name)
                    ax.plot([i + offset] * len(vals), vals, "k.", markersize=3)
            ax.text(i, 1.01, verdict(groups[s]), ha="center", va="bottom", fontsize=7)
        ax.axhline(CHANCE, color="gray", linestyle=":", label="chance", zorder=3)
        ax.set_xticks(range(len(settings)), ["\n".join(map(str, s[1:])) for s in settings], fontsize=8)
        ax.set(xlabel=" / ".join(map(column, keys[1:])), ylim=(0, 1.08), title=f"task={task}")  # pos_enc, then others
    axes[0][0].set_ylabel("accuracy (mean, min–max over seeds)")
    save(fig, path, rows, keys, fontsize=8, loc="outside lower center", ncols=3)


def board_cells(keys: list[str], groups: dict[tuple, Rows]) -> Rows:
    """The study view's cells (attnlab.board): named by the settings that tell them apart."""
    shown = telling_apart(keys, groups)
    cells = []
    for setting, group in groups.items():
        name = label(keys, setting, shown, sep=",")
        hparams = {column(keys[i]): setting[i] for i in shown}
        means = {m: statistics.fmean(v) for m in (*BOARD_METRICS, "attn/entropy_uniform") if (v := values(group, m))}
        seeds = "  \n".join(f"{r['seed']}: {score(r, 'test/acc')}" for r in group)
        text = f"**{name}**: {verdict(group)} (tested epochs {value_range(group, 'tested_epoch')})  \n{seeds}"
        cell = {"name": job_dirname(name), "hparams": hparams, "curves": [r["curves"] for r in group]}
        cells.append({**cell, "metrics": means, "text": text})
    return cells


def write_report(sweep_dir: str | Path, not_started: str = "") -> Rows:
    """`not_started`: why the sweep's jobs not started were not (its launcher's failure), for their rows."""
    sweep_dir = Path(sweep_dir)
    # what it writes and every job file it reads (FAILED, metrics.json, config.json) stay inside
    run_folder.check_no_links_out(sweep_dir, "sweep", depth=2)
    if (sweep_dir / BOARD_FOLDER).exists() and not (sweep_dir / BOARD_FOLDER).is_dir():
        raise ConfigError("sweep", str(sweep_dir), f"holds a file named {BOARD_FOLDER} where the study view goes")
    rows = collect(sweep_dir)
    if not rows:
        raise FileNotFoundError(f"no job folders (with .hydra/config.yaml) under {sweep_dir}")
    for row in rows:
        if row["status"] == "not started" and not_started:
            row["error"] = not_started
    keys = varying(rows)
    extra = [k for k in keys if k not in COLUMNS]  # any other key the sweep varies: a column of its own
    columns = ["job", "status", *COLUMNS.values(), *extra, "seed", *BUDGET, *METRICS, *VERDICT, *DIAGNOSTICS]
    table = [{**r, **{k: r["settings"].get(k) for k in extra}} for r in rows]
    groups = groups_of(rows, keys)
    scored = {s: g for s, g in groups.items() if any(r["lengths"] for r in g)}  # the runs that scored lengths
    lengths = []  # a row per job and length it scored
    for r in rows:
        job = {"job": r["job"], **{column(k): r["settings"].get(k) for k in keys}, "seed": r["seed"]}
        job["train_seq_len"] = r["settings"].get("data.seq_len")
        tested = {"tested_epoch": r.get("tested_epoch"), "tested_step": r.get("tested_step")}
        lengths += [{**job, "seq_len": n, **x, **tested} for n, x in sorted(r.get("lengths", {}).items())]
    # Written in a work folder, then moved in, each file whole: a reader, a second report or a kill meets the report
    # before or this one's, never a half-written file nor (but for the moment of the renames) a mix of the two.
    with run_folder.staging(sweep_dir, BOARD_FOLDER) as work:
        write_csv(work / "results.csv", table, [*columns, "fit_seconds", "error", "note"])
        summary = summary_markdown(rows, keys, groups, scored, sweep_dir)
        (work / "summary.md").write_text(summary)
        write_board(work / BOARD_FOLDER, board_cells(keys, groups), summary)
        made = {"results.csv", "summary.md"}
        if groups:
            plot_bars(rows, keys, groups, work / "acc_by_task_pos_enc.png")
            made.add("acc_by_task_pos_enc.png")
        if lengths:
            write_csv(work / "length_generalization.csv", lengths, list(lengths[0]))
            evaluated = [r for r in rows if r.get("lengths")]  # its title names the seeds scored, not all the sweep's
            plot_lengths(evaluated, keys, scored, work / "length_generalization.png")
            made |= {"length_generalization.csv", "length_generalization.png"}
        if plot_lines(rows, keys, "data.seq_len", "test/acc", work / "acc_vs_seq_len.png", "test accuracy"):
            made.add("acc_vs_seq_len.png")
        entropy, uniform = "entropy_vs_d_model.png", "attn/entropy_uniform"
        if plot_lines(rows, keys, "model.d_model", "attn/entropy", work / entropy, "attention entropy (nats)", uniform):
            made.add(entropy)
        for name in sorted(made):
            os.replace(work / name, sweep_dir / name)
        run_folder.swap_in(work, sweep_dir / BOARD_FOLDER)
    for stale in REPORT_FILES - made:  # an earlier report's, of results no longer there (a resume, an evaluation)
        (sweep_dir / stale).unlink(missing_ok=True)
    return rows


def conclude(sweep_dir: Path, code: int, began: float, launcher_error: str = "") -> int:
    """The end of a sweep, however it ended: the report, the verdicts, how many jobs finished and how to continue
    the others; the exit code: `code` (a signal's, the launcher's) where set, else 0 only when all finished.
    `launcher_error`: the launcher's failure, one line (the jobs it did not start: not started by it)."""
    from attnlab.timing import process_seconds  # here: it imports Lightning, which scripts/report.py needs not

    try:
        rows = write_report(sweep_dir, launcher_error and f"the launcher stopped before it started: {launcher_error}")
    except Exception as e:  # the report must not hide the outcome: say so, and fail
        print(f"error: the report could not be written: {type(e).__name__}: {e}", file=sys.stderr)
        return code or 1
    bad = [r for r in rows if r["status"] != "ok"]
    seconds = process_seconds(began)  # from process start: imports and the up-front checks included
    failed = f", {len(bad)} did not finish" if bad else ""
    keys = varying(rows)  # the verdicts: a line per cell (summary.md has the whole table)
    groups, planned = groups_of(rows, keys), planned_jobs(rows, keys)
    # a cell none of whose jobs finished has its line too: without it, its setting's column could vanish
    cells = {**groups, **{setting: [] for setting in planned if setting is not None and setting not in groups}}
    shown = telling_apart(keys, cells)
    table = [[*(column(keys[i]) for i in shown), "n", "test/acc", "verdict"]]
    for setting, group in cells.items():
        mean = f"{statistics.fmean(values(group, 'test/acc')):.3f}" if group else "–"
        called = verdict(group, planned[setting]) if group else "no job finished"
        table.append([*(printable(setting[i]) for i in shown), str(len(group)), mean, called])
    widths = [max(map(len, cells)) for cells in zip(*table, strict=True)]
    if groups:  # (no job finished: no table)
        lines = ("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in table)
        print("\n".join(line.rstrip() for line in lines))
    ended = "stopped after" if code else "done in"  # by a signal (128 + its number) or a broken launcher
    view = f"\n[attnlab] curves: tensorboard --logdir {shlex.quote(str(sweep_dir / BOARD_FOLDER))}" if groups else ""
    print(
        f"[attnlab] sweep {ended} {seconds:.1f} s: {len(rows) - len(bad)}/{len(rows)} jobs ok{failed}\n"
        f"[attnlab] report: {sweep_dir / 'summary.md'}{view}",  # (no job finished: no curves to show)
        flush=True,
    )
    for r in bad:
        said = "" if launcher_error and r["status"] == "not started" else r.get("error", "")  # (said once, above)
        print(f"[attnlab] {r['status']}: {printable(r['job'])} {printable(said)}".rstrip(), file=sys.stderr)
    for r in rows:
        if r.get("note"):
            print(f"[attnlab] note: {printable(r['job'])}: {printable(r['note'])}", file=sys.stderr)
    if bad:
        print(f"[attnlab] continue with: {run_folder.continue_command(sweep_dir, sweep=True)}", file=sys.stderr)
    return code or (1 if bad else 0)
