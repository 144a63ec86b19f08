"""Length generalisation (README: "Length generalisation"): a trained checkpoint scored on test sets of other
lengths, by `scripts/evaluate.py run_dir=<run>` or by a run with `eval.seq_lens` set, after its test.

Each length gets a fresh test set from `data.seed` and the length; the training length, the run's own test set
when `eval.n` is `data.n_test` (its default) and the run's test scored all of it (metrics.json's test_sequences:
not under `trainer.limit_test_batches`, nor DDP's dropped remainder), so the tested checkpoint gives back its
test/acc exactly. Lengths
past the positions an encoding with a parameter per position (offset) was trained on would score parameters still
at their random start: `eval.untrained` refuses them (nothing evaluated), skips them (recorded as refused)
or marks them.

evaluation.json: {"checkpoint": {file, epoch, global_step}, "train_seq_len", "n", "lengths": {L: {"acc", "ci"
(Wilson 95%), "untrained_positions"} or {"refused": reason}}, "earlier": [...]}. The same checkpoint evaluated
again adds lengths; another starts a new table, the old one kept in "earlier".
"""

import json
import os
from pathlib import Path
from typing import Any

import torch

from attnlab import run_folder
from attnlab.board import EVENTS
from attnlab.config import (
    EvalSection,
    check_eval,
    check_section,
    limited_batches,
    run_config,
    split_batches,
    untrained_reason,
)
from attnlab.errors import ConfigError, fits
from attnlab.run_folder import EVALUATION, FIGURE
from attnlab.tasks import derive_seed, make_split, split_seed
from attnlab.verdict import CHANCE, wilson


@torch.no_grad()
def score(
    net: torch.nn.Module, cfg: dict[str, Any], eval_cfg: dict[str, Any], tested: int | None = None
) -> dict[str, dict[str, Any]]:
    """{seq_len: result} for `eval_cfg["seq_lens"]` (checked already by `config.check_eval`). `tested`: the
    sequences the run's test scored (metrics.json's test_sequences), where known."""
    from attnlab.module import accuracy_metric  # here: a refusal answers before Lightning is imported

    data, model = cfg["data"], cfg["model"]
    n, step = eval_cfg["n"] or data["n_test"], eval_cfg["batch_size"]
    device = next(net.parameters()).device
    table: dict[str, dict[str, Any]] = {}
    was_training = net.training
    net.eval()
    for length in eval_cfg["seq_lens"]:
        reason = untrained_reason(data, model, length)
        if reason and eval_cfg["untrained"] != "mark":  # "skip"; "refuse" was refused up front
            table[str(length)] = {"refused": reason}
            continue
        # The run's own test set only as the module docstring says: a set of another size from the test set's seed,
        # or the whole of a set the test scored a part of, would be neither what the test scored nor a fresh one.
        whole = whole_test(cfg) if tested is None else tested == data["n_test"]
        own = length == data["seq_len"] and n == data["n_test"] and whole
        seed = split_seed("test", 0, data["seed"]) if own else derive_seed(data["seed"], "test", length)
        x, y = make_split(data["task"], n, length, data["dim"], seed)
        # counted as the run's own test/acc was, by this process alone: under DDP only the first scores (a sync
        # would wait at a barrier for processes that have left)
        metric = accuracy_metric(net.head.out_features, sync=False).to(device)
        for i in range(0, len(x), step):
            metric.update(net(x[i : i + step].to(device)).argmax(-1), y[i : i + step].to(device))
        acc = float(metric.compute())
        table[str(length)] = {"acc": acc, "ci": list(wilson(acc, n)), "untrained_positions": reason is not None}
    net.train(was_training)
    return table


def whole_test(cfg: dict[str, Any]) -> bool:
    """Where the run's count is unknown, whether its test scored its whole test set, in one process:
    trainer.limit_test_batches left it all its batches, and no fast_dev_run (one batch). (Under DDP each process
    drops its share's remainder: the count tells.)"""
    batches, limit = split_batches(cfg["data"], "test"), cfg["trainer"]["limit_test_batches"]
    return not cfg["trainer"]["fast_dev_run"] and limited_batches(batches, limit) == batches


def record(
    run_dir: Path, cfg: dict[str, Any], eval_cfg: dict[str, Any], table: dict, checkpoint: dict, key: str = "run_dir"
) -> dict[str, Any]:
    """Merge `table` into the run's evaluation.json (same checkpoint: more lengths, a skip never replacing a
    score; another: a new table, the old one kept under "earlier"), draw the figure, and return what was written.
    `key`: what names the run folder in an error (run_dir; a training run's output_dir)."""
    saved = read_evaluation(run_dir / EVALUATION)
    n = eval_cfg["n"] or cfg["data"]["n_test"]
    earlier = saved.get("earlier", [])
    if saved.get("checkpoint") == checkpoint and saved.get("n") == n:
        kept = saved["lengths"]
        table = {**kept, **{k: v for k, v in table.items() if "refused" not in v or "acc" not in kept.get(k, {})}}
    elif saved.get("lengths"):
        earlier = [*earlier, {k: saved.get(k) for k in ("checkpoint", "train_seq_len", "n", "lengths")}]
    lengths = dict(sorted(table.items(), key=lambda kv: int(kv[0])))
    entry = {"checkpoint": checkpoint, "train_seq_len": cfg["data"]["seq_len"], "n": n, "lengths": lengths}
    if earlier:
        entry["earlier"] = earlier
    figure = length_figure(entry)
    try:  # the figure first: a figure that cannot be written leaves evaluation.json as it was
        with run_folder.replacing(run_dir / FIGURE) as tmp:
            figure.savefig(tmp, dpi=120, format="png")
    except OSError as e:
        raise ConfigError(key, str(run_dir), f"{FIGURE} cannot be written there ({e.strerror or e})") from e
    run_folder.write_json_atomic(run_dir / EVALUATION, entry)
    if any(run_dir.glob(EVENTS)):  # a run logged to TensorBoard (logger=tensorboard, the default)
        from attnlab.dashboard import write_summaries
        from attnlab.diagnostics import image_summary

        # every table, at its checkpoint's step (the newest of a step), drawn again whole: an evaluation adds
        # lengths to a figure, and TensorBoard would show the old one beside the new
        tables = {t["checkpoint"]["global_step"]: t for t in [*earlier, entry]}
        figures = {step: figure if t is entry else length_figure(t) for step, t in tables.items()}
        summaries = [(image_summary("eval/acc_vs_seq_len", fig), step) for step, fig in figures.items()]
        write_summaries(run_dir, summaries, replaces="evaluation")
    return entry


def is_table(t: Any) -> bool:
    """One checkpoint's table as `record` writes it: its checkpoint (file, epoch, step), the training length,
    n > 0 (whole numbers below 2^63), each length refused (why) or scored (an accuracy and its interval in [0, 1],
    untrained_positions true or false)."""
    if not (isinstance(t, dict) and isinstance(t.get("checkpoint"), dict) and isinstance(t.get("lengths"), dict)):
        return False
    ckpt = t["checkpoint"]
    counts = [(ckpt.get("epoch"), 0), (ckpt.get("global_step"), 0), (t.get("n"), 1), (t.get("train_seq_len"), 1)]
    if not (fits(ckpt.get("file"), str | None) and all(fits(v, int) and least <= v < 2**63 for v, least in counts)):
        return False
    for length, r in t["lengths"].items():
        if not (length.isascii() and length.isdigit() and len(length) < 19 and int(length) > 0 and isinstance(r, dict)):
            return False
        ci = r.get("ci") if isinstance(r.get("ci"), list) and len(r["ci"]) == 2 else [None]
        fractions = [fits(v, float) and 0 <= v <= 1 for v in (r.get("acc"), *ci)]  # (NaN: no)
        scored = all(fractions) and isinstance(r.get("untrained_positions"), bool)
        if not (scored or isinstance(r.get("refused"), str)):
            return False
    return True


def read_evaluation(path: Path) -> dict[str, Any]:
    """A run's evaluation.json ({} where there is none), checked for the shape `record` writes, its earlier
    tables too: a file read back is input, and one that is not what it should be is refused (ConfigError)
    rather than replaced or half read."""
    if not path.exists():
        return {}
    refusal = "is not an evaluation this program wrote{}; move it away"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError("evaluation", str(path), refusal.format(f" ({type(e).__name__})")) from e
    earlier = saved.get("earlier", []) if isinstance(saved, dict) else None
    if not (is_table(saved) and isinstance(earlier, list) and all(map(is_table, earlier))):
        raise ConfigError("evaluation", str(path), refusal.format(""))
    return saved


def evaluate_run(run_dir: str | Path, eval_cfg: dict[str, Any], ckpt: str = "best") -> dict[str, Any]:
    """Score checkpoint `ckpt` of a finished run at `eval_cfg["seq_lens"]` into its evaluation.json (returned). Every
    refusal (a length, a run unfinished or being trained, a folder not writable) comes before any scoring."""
    run_dir = Path(run_dir)
    if run_dir.is_dir():  # every file it reads (and writes) stays inside the run; not one: run_config says so
        run_folder.check_no_links_out(run_dir, "run_dir")
    cfg = run_config(run_dir)
    state, reason = run_folder.status(run_dir)
    if state != "ok":  # its metrics.json would make a failed run look finished
        why = f" ({reason})" if reason else ""
        raise ConfigError("run_dir", str(run_dir), f"the run did not finish: {state}{why}; resume it first")
    if not eval_cfg["seq_lens"]:
        raise ConfigError("eval.seq_lens", eval_cfg["seq_lens"], "give at least one length, e.g. eval.seq_lens=[16,64]")
    check_section(eval_cfg, EvalSection, "eval.")
    if eval_cfg["n"] is None and cfg["data"]["n_test"] <= 0:  # (a record is read by its types: a crafted 0 is one)
        why = f"its saved config's data.n_test={cfg['data']['n_test']} gives no test sequences: give eval.n"
        raise ConfigError("run_dir", str(run_dir), why)
    check_eval(eval_cfg, cfg["data"], cfg["model"])
    if not os.access(run_dir, os.W_OK):
        raise ConfigError("run_dir", str(run_dir), "the run folder is not writable (evaluation.json goes there)")
    read_evaluation(run_dir / EVALUATION)  # before scoring: a file it could not merge into is refused first
    # The run's lock: a resume cannot replace the checkpoint while it is read, nor evaluation.json meanwhile.
    with run_folder.locked(run_dir, "run_dir"):
        run_folder.remove_left_writes(run_dir)  # (a killed evaluation's, or run's)
        path = run_folder.checkpoint_path(run_dir, ckpt, "eval.ckpt")
        from attnlab.module import load_module  # after the checks: a refusal answers before Lightning is imported

        module = load_module(path, cfg, "eval.ckpt")
        checkpoint = {"file": os.path.relpath(path.resolve(), run_dir.resolve()), **module.loaded_from}
        return record(run_dir, cfg, eval_cfg, score(module.net, cfg, eval_cfg, tested_sequences(run_dir)), checkpoint)


def tested_sequences(run_dir: Path) -> int | None:
    """metrics.json's test_sequences (a record: a whole number, else unknown)."""
    try:
        count = json.loads((run_dir / run_folder.METRICS).read_text()).get("test_sequences")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return count if type(count) is int else None


def length_figure(entry: dict[str, Any]) -> Any:
    """Test accuracy against sequence length (log scale) with 95% intervals; untrained positions marked."""
    from matplotlib.figure import Figure

    table, ckpt = entry["lengths"], entry["checkpoint"]
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    scored = {int(k): v for k, v in table.items() if "acc" in v}
    accs = [v["acc"] for v in scored.values()]
    errs = [[v["acc"] - v["ci"][0] for v in scored.values()], [v["ci"][1] - v["acc"] for v in scored.values()]]
    ax.errorbar(list(scored), accs, yerr=errs, fmt="-", color="tab:blue", capsize=3, label="test/acc (95% CI)")
    for untrained, style in ((False, {}), (True, {"mfc": "white", "color": "tab:red", "label": "untrained positions"})):
        if points := [(k, v["acc"]) for k, v in scored.items() if bool(v["untrained_positions"]) is untrained]:
            ax.plot(*zip(*points, strict=True), "o", **{"color": "tab:blue", **style})
    for k, v in table.items():
        if "refused" in v:
            ax.text(
                int(k), 0.52, "not scored:\nuntrained\npositions", ha="center", va="bottom", fontsize=7, color="grey"
            )
    train_len = entry["train_seq_len"]
    ax.axvline(train_len, color="tab:red", linestyle="--", label=f"training length {train_len}")
    ax.axhline(CHANCE, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(k) for k in table], [str(int(k)) for k in table])
    ax.set(ylim=(0.0, 1.02), xlabel="sequence length", ylabel=f"test accuracy ({entry['n']} sequences)")
    title = f"length generalisation of {ckpt['file']} (epoch {ckpt['epoch']}, step {ckpt['global_step']})"
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    return fig
