"""The report reads as the data says: grouped by every setting that varies, with the budget, a verdict
that tells "at chance" from "not converged", and plots that show no more than the runs gave.

Sweep folders are written here as the sweeper would (a job = its records, conftest.save_record, + metrics.json), so
each case is exact and quick; tests/test_sweeps.py covers the report of real sweeps."""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from attnlab import report, run_folder
from attnlab.board import cell_series
from attnlab.errors import ConfigError
from attnlab.report import write_report
from attnlab.verdict import converged

from .conftest import compose_train, save_record

FLAT = [0.6931, 0.6932, 0.6931, 0.6931, 0.6932]  # at chance for good: a plateau
FALLING = [0.69, 0.68, 0.66, 0.63, 0.60]  # still learning when the budget ran out


def add_job(sweep: Path, name: str, overrides: list[str], acc: float, val_loss: list[float] = FLAT, **kw):
    job = sweep / name
    cfg = compose_train(job, *overrides)
    save_record(job, cfg)
    epochs = len(val_loss)
    patience = cfg.early_stop.patience
    metrics = {  # what attnlab.train writes, as far as the report reads it
        "test/acc": acc,
        "test_sequences": cfg.data.n_test,
        "test/acc_shuffled": kw.pop("shuffled", 0.5),
        "val/acc_best": acc,
        "test/loss": 0.69,
        "tested_checkpoint": {"file": "checkpoints/best.ckpt", "epoch": epochs, "global_step": 4 * epochs},
        "epochs": epochs,
        "global_step": 4 * epochs,
        "ended_by": kw.pop("ended_by", "max_epochs"),
        "converged": converged(val_loss, patience, 1e-3),
        "history": {"val/loss": val_loss, "val/acc": [acc] * epochs},
    }
    (job / "metrics.json").write_text(json.dumps(metrics))


def rows_of(summary: str) -> list[list[str]]:
    table = [line for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table]


def test_every_varying_setting_is_a_column_never_averaged_as_seeds(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for n, acc in ((256, 0.5), (8192, 1.0)):
        for wd in (0.0, 0.1):
            for seed in (0, 1):
                overrides = ["data=halfswap", f"data.n_train={n}", f"optim.weight_decay={wd}", f"seed={seed}"]
                add_job(sweep, f"n{n}-wd{wd}-s{seed}", overrides, acc)
    write_report(sweep)
    header, *rows = rows_of((sweep / "summary.md").read_text())
    assert header[:5] == ["task", "pos_enc", "n_train", "optim.weight_decay", "n"]
    assert len(rows) == 4 and all(r[4] == "2" for r in rows)  # 2 seeds per cell, not 4 mixed jobs
    by_n = {(r[2], r[3]): r[5] for r in rows}
    assert by_n == {("256", "0.0"): "0.500 ± 0.000", ("256", "0.1"): "0.500 ± 0.000",
                    ("8192", "0.0"): "1.000 ± 0.000", ("8192", "0.1"): "1.000 ± 0.000"}  # fmt: skip
    with (sweep / "results.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert {r["optim.weight_decay"] for r in csv_rows} == {"0.0", "0.1"}
    assert {r["n_train"] for r in csv_rows} == {"256", "8192"}


def test_seed_and_display_settings_are_not_groups(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for seed, bar in ((0, "true"), (1, "false"), (2, "true")):
        add_job(sweep, f"s{seed}", ["data=halfswap", f"seed={seed}", f"trainer.enable_progress_bar={bar}"], 0.5)
    write_report(sweep)
    header, *rows = rows_of((sweep / "summary.md").read_text())
    assert header[:3] == ["task", "pos_enc", "n"] and len(rows) == 1 and rows[0][2] == "3"


@pytest.mark.parametrize(
    "val_loss,acc,expected",
    [
        (FLAT, 0.5, "chance"),
        (FALLING, 0.5, "not converged"),  # still learning when the budget ran out
        (FALLING[:2], 0.5, "not converged"),  # too few epochs to tell a plateau
        (FALLING, 1.0, "learned"),  # learned needs no plateau
        (FLAT, 0.7, "above chance"),
    ],
)
def test_verdict_tells_chance_from_not_converged(tmp_path, val_loss, acc, expected) -> None:
    sweep = tmp_path / "sweep"
    add_job(sweep, "a", ["data=halfswap", "model.pos_enc=learned"], acc, val_loss)
    add_job(sweep, "b", ["data=halfswap", "model.pos_enc=learned", "seed=1"], acc, FLAT)
    write_report(sweep)
    header, row = rows_of((sweep / "summary.md").read_text())
    assert dict(zip(header, row, strict=True))["verdict"] == expected


def test_each_seed_with_its_interval_and_the_tested_epoch_in_the_summary_and_the_csv(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for seed, acc in ((0, 0.8), (1, 0.5), (2, 0.5)):  # a mean of 0.6 "within 0.1 of chance" read "chance"
        add_job(sweep, f"s{seed}", ["data=halfswap", "data.n_test=1024", f"seed={seed}"], acc, FLAT[: 3 + seed])
    write_report(sweep)
    summary = (sweep / "summary.md").read_text()
    header, row = rows_of(summary)
    cells = dict(zip(header, row, strict=True))
    assert cells["verdict"] == "mixed (above chance: seed 0; chance: seed 1, 2)"
    assert cells["seeds (95% CI)"] == "0: 0.800 [0.774, 0.823]<br>1: 0.500 [0.469, 0.531]<br>2: 0.500 [0.469, 0.531]"
    assert cells["tested epoch"] == "3–5"
    assert "Wilson 95% interval" in summary and "lowest val/loss" in summary
    with (sweep / "results.csv").open() as f:
        got = [(r["seed"], r["verdict"], round(float(r["ci_low"]), 3), r["tested_epoch"]) for r in csv.DictReader(f)]
    assert got == [("0", "above chance", 0.774, "3"), ("1", "chance", 0.469, "4"), ("2", "chance", 0.469, "5")]


def test_the_budget_is_in_the_summary_and_the_csv(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for seed, epochs in ((0, 3), (1, 5)):
        overrides = ["data=halfswap", "trainer.max_epochs=5", "data.batch_size=64", "data.n_train=512", f"seed={seed}"]
        add_job(sweep, f"s{seed}", overrides, 0.5, FLAT[:epochs])
    write_report(sweep)
    summary = (sweep / "summary.md").read_text()
    assert "Budget: data.n_train=512, data.batch_size=64, trainer.max_epochs=5, early_stop.patience=null" in summary
    assert "early_stop.min_delta=0.001, data.n_test=1024; `epochs`" in summary  # the test set the intervals are over
    assert "Code: every finished job at commit `unknown (not a git checkout)`." in summary  # (no provenance here)
    header, row = rows_of(summary)
    assert dict(zip(header, row, strict=True))["epochs"] == "3–5"
    assert dict(zip(header, row, strict=True))["steps"] == "12–20"
    with (sweep / "results.csv").open() as f:
        got = [(r["epochs"], r["steps"], r["n_train"], r["batch_size"], r["max_epochs"]) for r in csv.DictReader(f)]
    assert got == [("3", "12", "512", "64", "5"), ("5", "20", "512", "64", "5")]


def test_encodings_in_a_meaningful_order_and_bars_inside_what_the_seeds_gave(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for enc in ("alibi", "rope", "none", "symmetric", "learned"):
        for seed, acc in ((0, 0.6), (1, 1.0), (2, 1.0)):
            add_job(sweep, f"{enc}-{seed}", ["data=halfswap", f"model.pos_enc={enc}", f"seed={seed}"], acc)
    write_report(sweep)
    _, *rows = rows_of((sweep / "summary.md").read_text())
    assert [r[1] for r in rows] == ["none", "learned", "rope", "symmetric", "alibi"]  # controls last
    mean, below, above = report.min_max([0.6, 1.0, 1.0])
    assert (round(mean - below, 6), round(mean + above, 6)) == (0.6, 1.0)  # mean ± std would pass 1.0
    assert (sweep / "acc_by_task_pos_enc.png").stat().st_size > 0


def test_lines_are_drawn_per_combination_not_averaged_over_a_setting(tmp_path: Path, monkeypatch) -> None:
    sweep = tmp_path / "sweep"
    for length in (8, 32):
        for scale, acc in (("none", 1.0), ("sqrt", 0.5)):
            for seed in (0, 1, 2):
                overrides = ["data=halfswap", "model.pos_enc=rope", f"data.seq_len={length}", f"model.scale={scale}"]
                add_job(sweep, f"{length}-{scale}-{seed}", [*overrides, f"seed={seed}"], acc)
    drawn = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "errorbar",
        lambda self, x, y, **kw: (drawn.append((kw["label"], list(y))), real(self, x, y, **kw))[1],
    )
    write_report(sweep)
    drawn = [(name, y) for name, y in drawn if not name.startswith("_")]  # bars draw theirs unlabelled
    assert sorted(drawn) == [("scale=none", [1.0, 1.0]), ("scale=sqrt", [0.5, 0.5])]  # not one line at 0.75
    assert (sweep / "acc_vs_seq_len.png").stat().st_size > 0


def test_a_job_that_never_started_adds_no_columns(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        add_job(sweep, f"s{seed}", ["data=halfswap", f"seed={seed}"], 0.5)
    jobs = [{"overrides": [f"seed={s}"], "dir": f"s{s}"} for s in (0, 1, 2)]  # s2 planned, never started
    (sweep / "jobs.json").write_text(json.dumps({"jobs": jobs}))
    write_report(sweep)
    summary = (sweep / "summary.md").read_text()
    header, *rows = rows_of(summary)
    assert header[:3] == ["task", "pos_enc", "n"] and rows[0][2] == "2"
    assert rows[1:] == [["job", "status", "error"], ["`s2`", "not started", ""]]  # the job without results


def test_the_bar_plot_sets_accuracy_beside_shuffled_accuracy_with_the_budget(tmp_path: Path, monkeypatch) -> None:
    sweep = tmp_path / "sweep"
    for enc, shuffled in (("none", 0.5), ("learned", 0.51)):
        for seed in (0, 1, 2):
            overrides = ["data=halfswap", f"model.pos_enc={enc}", f"seed={seed}", "trainer.max_epochs=7"]
            add_job(sweep, f"{enc}-{seed}", overrides, 1.0 if enc == "learned" else 0.5, shuffled=shuffled)
    import matplotlib.axes
    import matplotlib.figure

    bars, titles = [], []
    real_bar, real_title = matplotlib.axes.Axes.bar, matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "bar",
        lambda self, x, h, *a, **kw: (bars.append((x, h)), real_bar(self, x, h, *a, **kw))[1],
    )
    monkeypatch.setattr(
        matplotlib.figure.Figure, "suptitle", lambda self, t, **kw: (titles.append(t), real_title(self, t, **kw))[1]
    )
    write_report(sweep)
    # none (x=0) then learned (x=1); each: test/acc at -0.2, shuffled at +0.2
    assert sorted(bars) == [(-0.2, 0.5), (0.2, 0.5), (0.8, 1.0), (1.2, pytest.approx(0.51))]
    assert "trainer.max_epochs=7" in titles[0] and "seeds [0, 1, 2]" in titles[0]


def add_evaluation(sweep: Path, name: str, lengths: dict, checkpoint: dict | None = None) -> None:
    job = sweep / name
    tested = json.loads((job / "metrics.json").read_text())["tested_checkpoint"]
    entry = {"checkpoint": checkpoint or tested, "train_seq_len": 32, "n": 1024, "lengths": lengths}
    (job / "evaluation.json").write_text(json.dumps(entry))


def test_length_generalisation_table_per_setting_with_each_seed_and_untrained_lengths(tmp_path: Path) -> None:
    """The study's report: a table per encoding, each seed's interval, the verdict per length; lengths
    past the trained positions shown as such, never as a score; an evaluation of another checkpoint
    than the tested one is not joined."""
    sweep = tmp_path / "sweep"
    # per seed: accuracy at 32, 64, 128 (None: past learned's trained positions)
    scores = {"rope": [(1.0, 0.6, 0.5), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0)], "learned": [(1.0, None, None)] * 3}
    for enc, seeds in scores.items():
        for seed, (at32, at64, at128) in enumerate(seeds):
            name = f"{enc}-{seed}"
            add_job(sweep, name, ["data=halfswap", f"model.pos_enc={enc}", f"seed={seed}"], at32)
            untrained = {"refused": "untrained positions: pos_enc=learned was trained at length 32 (data.seq_len)"}
            lengths = {
                str(n): {"acc": a, "ci": [0, 1], "untrained_positions": False} if a is not None else untrained
                for n, a in ((32, at32), (64, at64), (128, at128))
            }
            add_evaluation(sweep, name, lengths)
    add_job(sweep, "rope-3", ["data=halfswap", "model.pos_enc=rope", "seed=3"], 1.0)
    add_evaluation(sweep, "rope-3", {"64": {"acc": 0.0, "ci": [0, 1], "untrained_positions": False}},
                   checkpoint={"file": "checkpoints/last.ckpt", "epoch": 5, "global_step": 20})  # fmt: skip
    write_report(sweep)
    summary = (sweep / "summary.md").read_text()
    section = summary[summary.index("## Length generalisation") :]
    learned = section[
        section.index("### task=halfswap, pos_enc=learned") : section.index("### task=halfswap, pos_enc=rope")
    ]
    rope = section[section.index("### task=halfswap, pos_enc=rope") :]
    header, *rows = rows_of(rope)
    assert header == ["seq_len", "n", "mean", "seed 0", "seed 1", "seed 2", "seed 3", "verdict"]
    by_len = {r[0]: r for r in rows}
    assert by_len["64"][3:6] == ["0.600 [0.569, 0.629]", "1.000 [0.996, 1.000]", "1.000 [0.996, 1.000]"]
    assert by_len["64"][6] == "–"  # seed 3 evaluated another checkpoint: not joined
    assert by_len["64"][1:3] == ["1024", "0.867"]  # the mean of the three joined seeds, not of seed 3's 0.0
    assert by_len["64"][7] == "mixed (above chance: seed 0; learned: seed 1, 2) (3 of 4 seeds)"
    _, *rows = rows_of(learned)
    assert [r[0] for r in rows] == ["32", "64", "128"]
    assert rows[1][1:] == ["–", "–", *["untrained positions (not scored)"] * 3, "not scored"]
    with (sweep / "length_generalization.csv").open() as f:
        notes = {(r["pos_enc"], r["seed"], r["seq_len"]): r["note"] for r in csv.DictReader(f)}
    assert notes[("learned", "0", "64")] == "untrained positions (not scored)"
    assert notes[("rope", "0", "64")] == ""
    assert (sweep / "length_generalization.png").stat().st_size > 0


def test_a_length_scored_at_untrained_positions_says_so_in_its_mean_and_verdict(tmp_path: Path) -> None:
    """eval.untrained=mark: each seed's cell was marked, but the mean and the cell's verdict over those scores
    were not."""
    for seed, acc in ((0, 0.227), (1, 0.5)):
        add_job(tmp_path, f"s{seed}", ["data=halfswap", "model.pos_enc=learned", f"seed={seed}"], 1.0)
        add_evaluation(tmp_path, f"s{seed}", {"64": {"acc": acc, "ci": [0, 1], "untrained_positions": True}})
    write_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    _, row = rows_of(summary[summary.index("### task=halfswap") :])
    assert row[2] == "0.363" and row[-1].endswith(" (untrained positions)"), row
    assert row[3].endswith(" untrained positions") and row[4].endswith(" untrained positions")


@pytest.mark.parametrize("content", ["{not json", '{"checkpoint": {}, "n": 64, "lengths": {"8": {"acc": 1.5}}}'])
def test_an_evaluation_that_does_not_read_leaves_the_runs_results_standing(tmp_path: Path, content: str) -> None:
    """evaluation.json is input too: one that does not read leaves out its lengths, said so, and the job's own
    (tested) results stay in every table."""
    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    add_job(tmp_path, "s1", ["seed=1"], 0.9)
    (tmp_path / "s1" / "evaluation.json").write_text(content)
    rows = {r["job"]: r for r in write_report(tmp_path)}
    assert rows["s1"]["status"] == "ok" and rows["s1"]["test/acc"] == 0.9 and rows["s1"]["lengths"] == {}
    why = "evaluation.json left out: is not an evaluation this program wrote"
    assert rows["s1"]["note"].startswith(why)
    summary = (tmp_path / "summary.md").read_text()
    assert "| 2 | 0.700 ± 0.283 |" in summary and f"| `s1` | {why}" in summary
    with (tmp_path / "results.csv").open() as f:
        assert [r["note"][: len(why)] for r in csv.DictReader(f)] == ["", why]


def test_the_study_views_curves_are_the_runs_own_tensorboard_curves_resumed_too(tmp_path: Path) -> None:
    """A cell's curves come from its jobs' metrics.json history (`board.curves`), not from reading their event
    files back: the same steps and values as each run's TensorBoard scalars, a resumed run's too (continued
    from its checkpoint's history, as its TensorBoard run continues from the checkpoint's step)."""
    from attnlab.board import CURVES, curves
    from attnlab.train import train

    from .conftest import TINY, tensorboard_run

    train(compose_train(tmp_path, *TINY, "diagnostics=true"))
    metrics = train(compose_train(tmp_path, *TINY, "diagnostics=true", "trainer.max_epochs=3", "resume=true"))
    events = tensorboard_run(tmp_path)
    logged = {tag: {e.step: pytest.approx(e.value) for e in events.Scalars(tag)} for tag in CURVES}
    assert curves(metrics["history"]) == logged
    assert sorted(logged["val/acc"]) == [3, 7, 11]  # TINY: 4 steps an epoch (files read in any order)


def test_a_seed_stopped_early_holds_its_last_value_in_the_cells_curves() -> None:
    """Averaged over only the seeds still training, a cell's mean would fall where a learned seed stops early."""
    learned, slow = {"val/acc": {1: 0.5, 2: 1.0, 3: 1.0}}, {"val/acc": {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.6, 5: 0.7}}
    series = cell_series([learned, slow])
    assert series["val/acc"] == {1: 0.5, 2: 0.75, 3: 0.75, 4: 0.8, 5: 0.85}
    assert series["val/acc/min"] == {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.6, 5: 0.7}
    assert series["val/acc/max"] == {1: 0.5, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0}


@pytest.mark.parametrize(
    ("history", "reason"),
    [({"step": [1e300], "val/acc": [0.5]}, "history step 1e+300 is not a step"),  # TensorBoard's writer: a crash
     ({"step": ["../x"], "val/acc": [0.5]}, "history step '../x' is not a step"),
     ({"step": [-1], "val/acc": [0.5]}, "history step -1 is not a step"),
     ({"step": [3], "val/acc": "ab"}, "could not convert string to float")],
)  # fmt: skip
def test_a_crafted_history_fails_its_row_and_the_report_is_written(tmp_path: Path, history, reason) -> None:
    """metrics.json is input: a history the study view cannot draw makes its job's row `failed`, saying why."""
    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    add_job(tmp_path, "s1", ["seed=1"], 0.5)
    metrics = json.loads((tmp_path / "s1" / "metrics.json").read_text())
    (tmp_path / "s1" / "metrics.json").write_text(json.dumps({**metrics, "history": history}))
    rows = {r["job"]: r for r in write_report(tmp_path)}
    assert rows["s0"]["status"] == "ok" and rows["s1"]["status"] == "failed"
    assert reason in rows["s1"]["error"]
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "tensorboard" / "study").is_dir()


@pytest.mark.parametrize(
    ("patch", "reason"),
    [({"test/acc": 1e308}, "test/acc is 1e+308, not an accuracy"),  # was: an OverflowError's traceback
     ({"test/acc": True}, "test/acc is True, not an accuracy"),  # was: 1.000, learned
     ({"test/acc": float("nan")}, "test/acc is nan, not an accuracy"),
     ({"test/loss": "x"}, "test/loss is 'x', not a finite number"),
     ({"epochs": float("inf")}, "inf is not a whole number >= 0"),
     ({"converged": "false"}, "converged is 'false', not true or false"),  # was: read as True, so `chance`
     ({"test_sequences": 0}, "0 is not a whole number >= 1"),
     ({"test/loss": 10**400}, "test/loss is 1000"),  # was: OverflowError (math.isinf of a huge int)
     ({"diagnostics": {"attn/entropy_uniform": 1000.0}}, "attn/entropy_uniform is 1000.0, not an entropy"),
     # was: taken on trust, so `chance` for a run still learning or an interval over sequences never scored
     ({"converged": False}, "converged is False, but its val/loss history says True (the rule: attnlab.verdict)"),
     ({"test_sequences": 10**9}, "test_sequences is 1000000000, more than its data.n_test (1024)")],
)  # fmt: skip
def test_a_crafted_result_fails_its_row_naming_the_value(tmp_path: Path, patch, reason) -> None:
    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    add_job(tmp_path, "s1", ["seed=1"], 0.5)
    metrics = json.loads((tmp_path / "s1" / "metrics.json").read_text())
    (tmp_path / "s1" / "metrics.json").write_text(json.dumps({**metrics, **patch}))
    rows = {r["job"]: r for r in write_report(tmp_path)}
    assert rows["s0"]["status"] == "ok" and rows["s1"]["status"] == "failed"
    assert reason in rows["s1"]["error"]


def test_the_interval_is_over_the_sequences_the_test_scored(tmp_path: Path) -> None:
    """A test cut by trainer.limit_test_batches scored 64 of data.n_test=1024: 36/64 is inconclusive ([0.441, 0.677]
    holds chance and 0.65 alike), not the `above chance` that 0.5625 of 1024 would be."""
    for seed in (0, 1):
        add_job(tmp_path, f"s{seed}", ["data=halfswap", "data.n_test=1024", f"seed={seed}"], 36 / 64)
        metrics = json.loads((tmp_path / f"s{seed}" / "metrics.json").read_text())
        (tmp_path / f"s{seed}" / "metrics.json").write_text(json.dumps({**metrics, "test_sequences": 64}))
    write_report(tmp_path)
    with (tmp_path / "results.csv").open() as f:
        got = [(r["n_test"], r["verdict"], round(float(r["ci_low"]), 3)) for r in csv.DictReader(f)]
    assert got == [("64", "inconclusive", 0.441)] * 2
    summary = (tmp_path / "summary.md").read_text()  # what the table's intervals are over, said beside them
    assert "data.n_test=1024; `epochs`" in summary and "2 of the jobs' tests scored fewer than data.n_test" in summary
    assert "0: 0.562 [0.441, 0.677] of 64<br>1: 0.562 [0.441, 0.677] of 64" in summary


def test_jobs_that_saved_no_checkpoint_are_said_to_report_their_final_weights(tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        add_job(tmp_path, f"s{seed}", ["data=halfswap", f"seed={seed}"], 0.5)
    metrics = json.loads((tmp_path / "s1" / "metrics.json").read_text())
    metrics["tested_checkpoint"] |= {"file": None, "selected_by": "none: no checkpoint saved"}
    (tmp_path / "s1" / "metrics.json").write_text(json.dumps(metrics))
    write_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert " 1 of the jobs saved no checkpoint (no validation ran; fast_dev_run): final weights." in summary


def test_jobs_started_from_another_runs_checkpoint_are_said_to_count_on_from_it(tmp_path: Path) -> None:
    for seed in (0, 1):
        add_job(tmp_path, f"s{seed}", ["data=halfswap", f"seed={seed}"], 0.5)
    metrics = json.loads((tmp_path / "s1" / "metrics.json").read_text())
    metrics["started_from"] = {"file": "/elsewhere/last.ckpt", "epoch": 3, "global_step": 12}
    (tmp_path / "s1" / "metrics.json").write_text(json.dumps(metrics))
    write_report(tmp_path)
    budget = next(line for line in (tmp_path / "summary.md").read_text().splitlines() if line.startswith("Budget"))
    assert budget.endswith(
        "trained (min–max); 1 of the jobs started from another run's checkpoint and count on from it."
    )


def test_a_verdict_on_fewer_seeds_than_started_says_so(tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        add_job(tmp_path, f"s{seed}", ["data=halfswap", f"seed={seed}"], 1.0)
    (tmp_path / "s1" / "metrics.json").unlink()
    (tmp_path / "s1" / "FAILED").write_text("Traceback: ...\n")
    write_report(tmp_path)
    header, row = rows_of((tmp_path / "summary.md").read_text())[:2]
    cells = dict(zip(header, row, strict=True))
    assert cells["n"] == "2" and cells["verdict"] == "learned (2 of 3 seeds finished)"


def test_a_copy_of_a_job_folder_is_not_a_seed_more(tmp_path: Path) -> None:
    """A backup of a job folder beside it (found on disk, like a moved job) was counted as one more seed of its
    cell: n 3 for 2 seeds, its accuracy twice in the mean, the std and the verdict."""
    import shutil

    for seed, acc in ((0, 1.0), (1, 0.5)):
        add_job(tmp_path, f"s{seed}", ["data=halfswap", f"seed={seed}"], acc)
    shutil.copytree(tmp_path / "s0", tmp_path / "s0.bak")
    rows = write_report(tmp_path)
    header, row = rows_of((tmp_path / "summary.md").read_text())[:2]
    cells = dict(zip(header, row, strict=True))
    assert cells["n"] == "2" and cells["test/acc"] == "0.750 ± 0.354" and cells["verdict"].startswith("mixed")
    assert {r["job"]: r.get("duplicate_of") for r in rows} == {"s0": None, "s0.bak": "s0", "s1": None}
    assert (
        "| `s0.bak` | the same config and seed as s0 (a copy?): counted once |" in (tmp_path / "summary.md").read_text()
    )


def test_two_planned_jobs_of_one_training_are_counted_once_and_named_so(tmp_path: Path) -> None:
    """A grid over a display setting alone (`progress=plain,tqdm`) runs one training twice: counted once, and
    not called a copy (the sweep planned both)."""
    add_job(tmp_path, "plain", ["data=halfswap", "seed=0", "progress=plain"], 1.0)
    add_job(tmp_path, "tqdm", ["data=halfswap", "seed=0", "progress=tqdm"], 1.0)
    jobs = [{"dir": name, "overrides": [f"progress={name}"]} for name in ("plain", "tqdm")]
    (tmp_path / "jobs.json").write_text(json.dumps({"jobs": jobs}))
    rows = write_report(tmp_path)
    assert [r.get("note") for r in rows] == [
        None,
        "the same config and seed as plain but for display settings: counted once",
    ]
    header, row = rows_of((tmp_path / "summary.md").read_text())[:2]
    assert dict(zip(header, row, strict=True))["n"] == "1"


def test_values_equal_in_python_but_not_to_lightning_are_cells_of_their_own(tmp_path: Path) -> None:
    """`+trainer.limit_test_batches=1,1.0` (one test batch against all of them): 1 == 1.0 made one cell of four
    seeds, each seed listed twice, with one mean over both settings."""
    for value in ("1", "1.0"):
        for seed in (0, 1):
            add_job(tmp_path, f"{value}-s{seed}", [f"+trainer.limit_test_batches={value}", f"seed={seed}"], 0.5)
    write_report(tmp_path)
    header, *rows = rows_of((tmp_path / "summary.md").read_text())
    cells = [dict(zip(header, row, strict=False)) for row in rows if len(row) == len(header)]
    assert [(c["trainer.limit_test_batches"], c["n"]) for c in cells] == [("1", "2"), ("1.0", "2")], cells


def test_jobs_a_broken_launcher_never_started_say_why_once(tmp_path: Path, capsys) -> None:
    """sbatch failing (no cluster): summary.md listed the jobs as `not started` with no reason."""
    from attnlab.sweep_record import write_jobs

    sweep = tmp_path / "sweep"
    add_job(sweep, "s0", ["data=halfswap", "seed=0"], 1.0)
    write_jobs(sweep, [["data=halfswap", f"seed={s}"] for s in (0, 1, 2)], ["s0", "s1", "s2"])
    why = "FailedJobError: sbatch: fatal: Could not establish a configuration source"
    assert report.conclude(sweep, 1, 0.0, why) == 1
    rows = [row for row in rows_of((sweep / "summary.md").read_text()) if row[0] in ("`s1`", "`s2`")]
    assert rows == [[f"`s{i}`", "not started", f"the launcher stopped before it started: {why}"] for i in (1, 2)]
    err = capsys.readouterr().err.splitlines()
    assert "[attnlab] not started: s1" in err and "[attnlab] not started: s2" in err, err  # (the reason: said once)
    command = run_folder.continue_command(sweep, sweep=True)
    assert err[-1] == f"[attnlab] continue with: {command}"


def test_a_verdict_counts_the_seeds_planned_that_never_started(tmp_path: Path, capsys) -> None:
    """A sweep cut short before a seed's job started: the cell said "(1 of 2 seeds finished)" of the 3 it planned
    (a job never started has no config), and the console's verdict line said nothing."""
    from attnlab.sweep_record import write_jobs

    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        add_job(sweep, f"s{seed}", ["data=halfswap", f"seed={seed}"], 1.0)
    (sweep / "s1" / "metrics.json").unlink()
    (sweep / "s1" / "INTERRUPTED").write_text("stopped by signal 15\n")
    # a continuation gives the jobs it runs `resume=True` and may lengthen their budget; the kept one has neither
    jobs = [["data=halfswap", "seed=0"], *(["data=halfswap", f"seed={s}", "resume=True", "trainer.max_epochs=9"]
                                          for s in (1, 2))]  # fmt: skip
    write_jobs(sweep, jobs, [f"s{seed}" for seed in (0, 1, 2)])
    assert report.conclude(sweep, 143, 0.0) == 143
    header, row = rows_of((sweep / "summary.md").read_text())[:2]
    assert dict(zip(header, row, strict=True))["verdict"] == "learned (1 of 3 seeds finished)"
    out = capsys.readouterr().out
    assert "learned (1 of 3 seeds finished)" in out.splitlines()[1], out


def test_the_consoles_verdicts_keep_a_cell_whose_jobs_all_failed(tmp_path: Path, capsys) -> None:
    """Every job of optim.lr=1e30 failed: the console's table lost its lr column, and its cells had no line."""
    for lr in ("0.003", "1e30"):
        for seed in (0, 1):
            add_job(tmp_path, f"{lr}-{seed}", ["data=halfswap", f"optim.lr={lr}", f"seed={seed}"], 1.0)
            if lr == "1e30":
                (tmp_path / f"{lr}-{seed}" / "metrics.json").unlink()
                (tmp_path / f"{lr}-{seed}" / "FAILED").write_text("FloatingPointError: train/loss is nan\n")
    assert report.conclude(tmp_path, 0, 0.0) == 1
    table = [line.split() for line in capsys.readouterr().out.splitlines()[:3]]
    assert table == [["lr", "n", "test/acc", "verdict"], ["0.003", "2", "1.000", "learned"],
                     ["1e+30", "0", "–", "no", "job", "finished"]]  # fmt: skip


@pytest.mark.parametrize("given", [False, True], ids=["newest", "SWEEP="])
def test_make_report_passes_a_folders_name_to_the_shell_as_a_value(tmp_path: Path, given: bool) -> None:
    """`make report` and `make tensorboard` take the newest sweep folder, or SWEEP=: its name is data, never shell
    text, nor make's (`$(...)` in SWEEP= was expanded by make: another folder)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").symlink_to(root / "scripts")
    name = "x$(touch${IFS}PWNED)`touch${IFS}PWNED2`;\"'" if not given else "y$(touch PWNED) `touch PWNED2`"
    hostile = tmp_path / "outputs" / "multiruns" / name
    (hostile / "seed=0").mkdir(parents=True)
    (hostile / "seed=0" / "metrics.json").write_text("{}")  # a finished job: the newest sweep with one
    (hostile / "multirun.yaml").write_text("{}")
    make = ["make", "-f", str(root / "Makefile"), "-o", "setup", f"VENV={Path(sys.executable).parents[1]}"]
    sweep = [f"SWEEP=outputs/multiruns/{name}"] if given else []
    proc = subprocess.run([*make, "report", *sweep], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and f"outputs/multiruns/{name}" in proc.stderr, proc.stderr  # (its jobs: no config)
    dry = subprocess.run([*make, "-n", "tensorboard", *sweep], cwd=tmp_path, capture_output=True, text=True).stdout
    assert '--logdir "$ATTNLAB_LOGDIR"' in dry
    assert not list(tmp_path.glob("PWNED*"))


def test_what_a_job_at_any_depth_reads_stays_inside_the_sweep(tmp_path: Path) -> None:
    """jobs.json (or a folder found on disk) may place a job deeper than the sweep's own link check looked: its
    FAILED, a link to a file outside, was copied into summary.md and results.csv."""
    sweep = tmp_path / "sweep"
    add_job(sweep, "s0", ["seed=0"], 0.5)
    add_job(sweep, "deep/a/b", ["seed=1"], 0.5)
    (tmp_path / "secret.txt").write_text("a secret line\n")
    (sweep / "deep" / "a" / "b" / "FAILED").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(ConfigError, match=r"holds a link to outside it \(FAILED\)"):
        write_report(sweep)
    assert not (sweep / "summary.md").exists() and not (sweep / "results.csv").exists()


def test_a_failures_last_line_is_shown_as_text_not_as_terminal_codes_or_table_cells(tmp_path: Path) -> None:
    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    add_job(tmp_path, "s1", ["seed=1"], 0.5)
    (tmp_path / "s1" / "FAILED").write_text("Traceback ...\nboom | verdict | learned | \x1b[2J\x1b]0;owned\x07\n")
    rows = {r["job"]: r for r in write_report(tmp_path)}
    assert rows["s1"]["error"] == "boom | verdict | learned | \\x1b[2J\\x1b]0;owned\\x07"
    summary = (tmp_path / "summary.md").read_text()
    assert "| `s1` | failed | boom \\| verdict \\| learned \\| \\x1b[2J\\x1b]0;owned\\x07 |" in summary
    assert "\x1b" not in summary


def test_a_file_where_the_study_view_goes_is_refused_not_deleted(tmp_path: Path) -> None:
    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    (tmp_path / "tensorboard").write_text("a file of the user's\n")
    with pytest.raises(ConfigError, match="holds a file named tensorboard where the study view goes"):
        write_report(tmp_path)
    assert (tmp_path / "tensorboard").read_text() == "a file of the user's\n"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "error: the following arguments are required: sweep_dir (python scripts/report.py --help)"),
        (["{sweep}", "extra"], "error: unrecognized arguments: extra (python scripts/report.py --help)"),
        (["{sweep}"], "error: the report could not be written: IsADirectoryError: "),
    ],
    ids=["no-folder", "extra-argument", "unwritable"],
)
def test_report_py_refuses_in_one_line_with_exit_code_1(tmp_path: Path, args: list[str], said: str) -> None:
    """argparse's own refusals (usage, exit 2) and a report that cannot be written (a folder where results.csv
    goes) are one line and exit 1, as every refusal."""
    import subprocess

    from .conftest import CLI_ENV, ROOT, python

    sweep = tmp_path / "sweep"
    add_job(sweep, "s0", ["data=halfswap", "seed=0"], 0.5)
    add_job(sweep, "s1", ["data=uniform", "seed=0"], 0.5)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "results.csv").mkdir()
    script = [*python(), str(ROOT / "scripts" / "report.py")]
    proc = subprocess.run(
        [*script, *(a.format(sweep=sweep) for a in args)], env=CLI_ENV, capture_output=True, text=True
    )
    assert proc.returncode == 1 and proc.stderr.strip().startswith(said) and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("failed", [False, True])
def test_report_py_to_a_reader_that_has_gone_ends_as_its_report_does(tmp_path: Path, failed: bool) -> None:
    """`python scripts/report.py SWEEP | head -1`: the reader may leave before the summary is printed, which comes
    after the report is written. A BrokenPipeError traceback (and Python's second one at exit) said the report
    failed; now nothing is said, and the exit code is the report's: 1 for a sweep with a job that failed."""
    import subprocess

    from .conftest import CLI_ENV, ROOT, python

    sweep = tmp_path / "sweep"
    add_job(sweep, "s0", ["seed=0"], 0.5)
    if failed:
        add_job(sweep, "s1", ["seed=1"], 0.5)
        (sweep / "s1" / "metrics.json").unlink()
        (sweep / "s1" / "FAILED").write_text("RuntimeError: boom\n")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    script = [*python(), str(ROOT / "scripts" / "report.py"), str(sweep)]
    proc = subprocess.Popen(script, env=CLI_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # gone before anything was printed
    err = proc.stderr.read()
    assert (proc.wait(), err) == (int(failed), "")
    assert (sweep / "summary.md").is_file() and (sweep / "results.csv").is_file()  # written before the print


def test_an_unreadable_jobs_record_is_refused_not_read_as_no_plan(tmp_path: Path) -> None:
    """A cut or garbled jobs.json made the report drop its planned-but-unstarted jobs and exit 0."""
    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    (tmp_path / "jobs.json").write_text('[{"overrides": ["seed=0"], "dir": "s0"}, {"overrides": ["seed=1"]')
    with pytest.raises(ConfigError, match=r"jobs.json' is invalid: is not a record of jobs this program wrote \("):
        write_report(tmp_path)


def test_make_report_picks_the_newest_sweep_with_a_finished_job_and_says_so(tmp_path: Path) -> None:
    """A refused or failed sweep (no job finished) became "the newest", and make report / tensorboard opened it;
    an older sweep whose folder a report had just been written into (its time moved) too."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "scripts").symlink_to(root / "scripts")
    studies = tmp_path / "outputs" / "multiruns"
    for age, sweep in enumerate(("failed", "study", "old")):  # started in that order, the newest first
        (studies / sweep / "seed=0").mkdir(parents=True)
        (studies / sweep / "multirun.yaml").write_text("{}")
        os.utime(studies / sweep / "multirun.yaml", (1000 - age, 1000 - age))
        if sweep != "failed":
            (studies / sweep / "seed=0" / "metrics.json").write_text("{}")
    make = ["make", "-f", str(root / "Makefile"), "-o", "setup", f"VENV={Path(sys.executable).parents[1]}"]
    proc = subprocess.run([*make, "report"], cwd=tmp_path, capture_output=True, text=True)
    assert "make report: outputs/multiruns/study, the newest sweep with a finished job (SWEEP=" in proc.stdout
    assert (studies / "old").stat().st_mtime > (studies / "study").stat().st_mtime  # (its folder's time: newer)
    for sweep in ("study", "old"):
        (studies / sweep / "seed=0" / "metrics.json").unlink()
    proc = subprocess.run([*make, "report"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "make report: no sweep with a finished job under outputs/multiruns/" in proc.stderr
    proc = subprocess.run([*make, "evaluate"], cwd=tmp_path, capture_output=True, text=True)
    assert "make evaluate: RUN is not set: make evaluate RUN=<run folder, as printed>" in proc.stderr


def test_the_length_plot_names_only_the_seeds_it_scored(tmp_path: Path, monkeypatch) -> None:
    """Only seed 0 evaluated: the length plot's title said "seeds [0, 1, 2]" while its legend showed seed 0."""
    import matplotlib.figure

    for seed in (0, 1, 2):
        add_job(tmp_path, f"s{seed}", ["data=halfswap", "model.pos_enc=rope", f"seed={seed}"], 1.0)
    add_evaluation(tmp_path, "s0", {"64": {"acc": 0.75, "ci": [0.7, 0.8], "untrained_positions": False}})
    titles: list[str] = []
    real_title = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(
        matplotlib.figure.Figure, "suptitle", lambda self, t, **kw: (titles.append(t), real_title(self, t, **kw))[1]
    )
    write_report(tmp_path)
    (lengths,) = [t for t in titles if t.startswith("length generalisation")]
    assert " ".join(lengths.split()).endswith("seeds [0]")
    assert any(" ".join(t.split()).endswith("seeds [0, 1, 2]") for t in titles if t is not lengths)


def test_the_summary_names_the_commits_that_made_its_numbers(tmp_path: Path) -> None:
    for seed, commit in ((0, "a" * 40), (1, "a" * 40), (2, "b" * 40)):
        add_job(tmp_path, f"s{seed}", [f"seed={seed}"], 0.5)
        metrics = json.loads((tmp_path / f"s{seed}" / "metrics.json").read_text())
        metrics["provenance"] = {"git_commit": commit, "git_dirty": False}
        (tmp_path / f"s{seed}" / "metrics.json").write_text(json.dumps(metrics))
    write_report(tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert f"Code: jobs at different commits: `{'a' * 12}` (2 jobs), `{'b' * 12}` (1 jobs)." in summary


def test_a_setting_given_as_a_key_reference_is_read_resolved(tmp_path: Path) -> None:
    """`data.n_test=${data.n_val}` stays a reference in config.yaml: both finished jobs were reported failed
    (TypeError comparing test_sequences with the text '${data.n_val}')."""
    for seed in (0, 1):
        add_job(tmp_path, f"s{seed}", [f"seed={seed}", "data.n_val=256", "data.n_test=${data.n_val}"], 0.5)
    assert "${data.n_val}" in (tmp_path / "s0" / ".hydra" / "config.yaml").read_text()
    rows = write_report(tmp_path)
    assert [(r["status"], r["n_test"]) for r in rows] == [("ok", 256), ("ok", 256)]


def edited(key: str, value: object) -> Callable[[str], str]:
    """An edit of a config.json's text: `key` (dotted) set to `value`."""

    def edit(text: str) -> str:
        record = json.loads(text)
        *sections, name = key.split(".")
        functools.reduce(dict.__getitem__, sections, record)[name] = value
        return json.dumps(record)

    return edit


MANY_KEYS = ", ".join(f'"k{i}": 0' for i in range(100_000))
CRAFTED_CONFIGS = {  # a job's config.json edited so -> the start of its row's error
    "a task as a number": (edited("data.task", 7), "data.task=7 is invalid: expected one of ['uniform', 'halfswap']"),
    "a key given twice": (lambda t: t.replace('"seq_len": 8', '"seq_len": 8, "seq_len": 9'), "seq_len given twice"),
    "a list for a number": (edited("data.seq_len", [8]), "data.seq_len=[8] is invalid: must be of type int"),
    "text for a number": (edited("data.seq_len", "eight"), "data.seq_len='eight' is invalid: must be of type int"),
    "a key no schema has": (edited("data.extra", 1), "data.extra=1 is invalid: unknown key; data has"),
    "not a mapping": (lambda t: "[1, 2]", "not a mapping of keys to values"),
    "not JSON": (lambda t: t[:-5], "Expecting"),
    "nested past Python's stack": (lambda t: "[" * 100_000 + "]" * 100_000, "maximum recursion depth exceeded"),
    # (a quadratic search for a key given twice took minutes over them: every reader of the record hung)
    "a key twice among 100,000": (
        lambda t: t.replace('"seq_len": 8', f'"seq_len": 8, {MANY_KEYS}, "seq_len": 9'),
        "seq_len given twice",
    ),
    "100,000 unknown keys": (
        lambda t: t.replace('"seq_len": 8', f'"seq_len": 8, {MANY_KEYS}'),
        "data.k0=0 is invalid: unknown key; data has",
    ),
    "a number of 5,000 digits": (lambda t: t.replace('"seq_len": 8', '"seq_len": 1' + "0" * 5000), "Exceeds the limit"),
}


@pytest.mark.parametrize("crafted", list(CRAFTED_CONFIGS))
def test_a_crafted_job_config_fails_its_row_alone(tmp_path: Path, crafted: str) -> None:
    """A job's config that no run could have written fails that job's row, saying why in one line; the others and
    the report stand."""
    sweep = tmp_path / "sweep"
    add_job(sweep, "s0", ["data=halfswap", "seed=0", "data.seq_len=8"], 1.0)
    add_job(sweep, "s1", ["data=halfswap", "seed=1", "data.seq_len=8"], 1.0)
    config = sweep / "s1" / "config.json"
    edit, why = CRAFTED_CONFIGS[crafted]
    text = config.read_text()
    config.write_text(edit(text))
    assert config.read_text() != text
    rows = {r["job"]: r for r in write_report(sweep)}
    assert rows["s0"]["status"] == "ok" and rows["s1"]["status"] == "failed", rows["s1"]
    assert rows["s1"]["error"].startswith(f"its config.json does not load ({why}"), rows["s1"]["error"]
    assert (sweep / "summary.md").is_file()


@pytest.mark.parametrize("edit", [('"accelerator": "auto"', '"accelerator": "gpu"'), ('"n_val": 1024', '"n_val": 1')])
def test_a_record_is_read_by_its_types_not_todays_rules(tmp_path: Path, edit: tuple[str, str]) -> None:
    """A GPU run's results are reported on a CPU machine; a sweep of an earlier version, whose rules allowed
    `data.n_val: 1`, is reported as it finished (checked by today's rules, its rows all failed and its summary was
    written over)."""
    add_job(tmp_path, "s0", ["seed=0"], 1.0)
    config = tmp_path / "s0" / "config.json"
    assert edit[0] in config.read_text()
    config.write_text(config.read_text().replace(*edit))
    assert [r["status"] for r in write_report(tmp_path)] == ["ok"]


def test_a_jobs_config_missing_leaves_its_row_saying_how_it_ended(tmp_path: Path) -> None:
    """A job without its config.json (stopped before it wrote it, or deleted) was "unfinished" whatever its folder
    said: its INTERRUPTED marker, or a metrics.json of results no config says the settings of."""
    for seed in (0, 1, 2):
        add_job(tmp_path, f"s{seed}", [f"seed={seed}"], 1.0)
    (tmp_path / "s1" / "config.json").unlink()
    (tmp_path / "s2" / "config.json").unlink()
    (tmp_path / "s2" / "metrics.json").unlink()
    (tmp_path / "s2" / "INTERRUPTED").write_text("stopped by signal 15\n")
    rows = {r["job"]: (r["status"], r.get("error")) for r in write_report(tmp_path)}
    assert rows == {
        "s0": ("ok", None),
        "s1": ("failed", "its config.json is missing"),
        "s2": ("interrupted", "stopped by signal 15"),
    }


def test_a_long_setting_in_a_record_names_its_cell_within_a_folder_name(tmp_path: Path) -> None:
    """A job whose record holds a `+trainer.X` of 300 characters: the study view's cell folder was named by it whole
    (File name too long), and the whole report failed."""
    for seed in (0, 1):
        add_job(tmp_path, f"s{seed}", [f"seed={seed}"], 1.0)
    config = tmp_path / "s1" / "config.json"
    config.write_text(edited("trainer.zz", "A" * 300)(config.read_text()))
    assert [r["status"] for r in write_report(tmp_path)] == ["ok", "ok"]
    names = sorted(p.name for p in (tmp_path / "tensorboard").iterdir() if p.name.startswith("trainer.zz="))
    assert names[1] == "trainer.zz=None" and len(names[0]) == 200 and names[0].startswith("trainer.zz=AAA"), names


def test_a_records_control_characters_are_shown_escaped(tmp_path: Path, capsys) -> None:
    """A job's config holding a terminal's escape sequence and a newline (logger.project, any text a record holds):
    summary.md and the sweep's last lines wrote them raw, so that `cat summary.md` or the terminal the sweep ended
    in ran the sequence, and the newline broke the table's row. Shown as their escapes."""
    from attnlab import report

    sweep = tmp_path / "sweep"
    for seed, project in ((0, "plain"), (1, "evil")):
        add_job(sweep, f"s{seed}", ["data=halfswap", f"seed={seed}", f"logger.project={project}"], 1.0)
    config = sweep / "s1" / "config.json"
    text = edited("logger.project", "\x1b[2J\x1b[31mred\nline")(config.read_text())
    config.write_text(edited("trainer.\x1b[1mbold", 1)(text))  # a key: a column's name
    report.conclude(sweep, 0, 0.0)
    said = capsys.readouterr()
    summary = (sweep / "summary.md").read_text()
    for text in (summary, said.out, said.err):
        assert "\x1b" not in text and "red\nline" not in text
    assert "\\x1b[2J\\x1b[31mred\\nline" in said.out, said.out  # the verdicts' table, as its escapes
    assert "trainer.\\x1b[1mbold" in rows_of(summary)[0] and "trainer.\\x1b[1mbold" in said.out, said.out
    cells = [row for row in rows_of(summary) if "red" in " ".join(row)]
    assert len(cells) == 1 and "\\x1b[2J\\x1b[31mred\\nline" in cells[0], cells
    assert len(cells[0]) == len(rows_of(summary)[0])  # the row whole: as many cells as the header


def test_an_earlier_reports_tables_and_plots_go_when_their_results_do(tmp_path: Path) -> None:
    """A job resumed since its evaluation tests another checkpoint: its lengths are left out, and said so (they were
    dropped unsaid), and the length table and plot of the report before, of the old checkpoint, are removed (they
    stood beside the new summary as if current)."""
    from attnlab.verdict import wilson

    sweep = tmp_path / "sweep"
    add_job(sweep, "s0", ["seed=0"], 1.0)
    add_job(sweep, "s1", ["seed=1"], 1.0)
    tested = json.loads((sweep / "s0" / "metrics.json").read_text())["tested_checkpoint"]
    entry = {"checkpoint": dict(tested), "train_seq_len": 32, "n": 1024}
    entry["lengths"] = {"64": {"acc": 0.5, "ci": list(wilson(0.5, 1024)), "untrained_positions": False}}
    (sweep / "s0" / "evaluation.json").write_text(json.dumps(entry))
    write_report(sweep)
    made = {"length_generalization.csv", "length_generalization.png", "acc_by_task_pos_enc.png"}
    assert made <= {p.name for p in sweep.iterdir()}
    entry["checkpoint"] = {**tested, "epoch": tested["epoch"] - 1, "global_step": tested["global_step"] - 4}
    (sweep / "s0" / "evaluation.json").write_text(json.dumps(entry))
    rows = {r["job"]: r for r in write_report(sweep)}
    epoch, step = tested["epoch"], tested["global_step"]
    why = f"scores other checkpoints (checkpoints/best.ckpt, epoch {epoch - 1}, step {step - 4}), not the tested one "
    why += f"(checkpoints/best.ckpt, epoch {epoch}, step {step})"
    assert rows["s0"]["note"] == f"evaluation.json left out: {why}: evaluate that one"
    assert why in (sweep / "summary.md").read_text()
    assert not (sweep / "length_generalization.csv").exists() and not (sweep / "length_generalization.png").exists()
    assert (sweep / "acc_by_task_pos_enc.png").exists()


def test_two_reports_at_once_leave_one_whole_study_view(tmp_path: Path, monkeypatch) -> None:
    """A second report run while the first writes its study view (`make report` beside a sweep's own end): the first
    deleted the folder the second was writing into (one exited 1 on a missing events file) or the two wrote into one
    folder, runs holding two sessions. Each now writes a view of its own and swaps it in whole."""
    from attnlab import board

    for seed, task in enumerate(["halfswap", "uniform"] * 2):
        add_job(tmp_path, f"s{seed}", [f"data={task}", f"seed={seed // 2}"], 0.5)
    write_report(tmp_path)
    before = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    summaries, nested = board.hparams_summaries, []

    def second_report_meanwhile(*args, **kwargs):  # inside the first report's writing of its first cell
        if not nested:
            nested.append(True)
            write_report(tmp_path)
        return summaries(*args, **kwargs)

    monkeypatch.setattr(board, "hparams_summaries", second_report_meanwhile)
    write_report(tmp_path)
    view = tmp_path / "tensorboard"
    assert nested and sorted(p.name for p in view.iterdir()) == before
    assert all(len(list(run.glob("events.out.tfevents.*"))) == 1 for run in view.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no folder left beside it


def test_a_killed_reports_work_folder_goes_with_the_next_report_and_one_in_use_stays(tmp_path: Path) -> None:
    """A report killed (SIGKILL, or SIGTERM before report.py said what it does) while it wrote left its work folder
    (`.report-*`) of partial runs and files, which `tensorboard --logdir <sweep>` showed beside the jobs."""
    import fcntl
    import os

    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    killed, in_use = tmp_path / ".report-killed", tmp_path / ".report-in-use"
    for work in (killed, in_use):
        (work / "tensorboard" / "seed=0").mkdir(parents=True)
        (work / "tensorboard" / "seed=0" / "events.out.tfevents.1.host.1.0").write_bytes(b"partial")
        (work / "results.csv").write_text("job,st")
    held = os.open(in_use, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # as a report writing in it holds it
    try:
        write_report(tmp_path)
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == [in_use.name]
    umask = os.umask(0)
    os.umask(umask)
    mode = (tmp_path / "tensorboard").stat().st_mode & 0o777  # (a folder made by tempfile was 0700: no one else's)
    assert mode == 0o777 & ~umask


def test_a_report_stopped_between_its_renames_leaves_the_view_before(tmp_path: Path, monkeypatch) -> None:
    """Stopped after the old view was moved aside and before the new one was renamed in: the old one goes back."""
    from attnlab import run_folder

    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    write_report(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "tensorboard").rglob("*"))

    def stopped_midway(work: Path, view: Path) -> None:
        view.rename(work / "tensorboard.old0")
        raise KeyboardInterrupt

    monkeypatch.setattr(run_folder, "swap_in", stopped_midway)
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "tensorboard").rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_plot_that_fails_to_write_leaves_the_one_before(tmp_path: Path, monkeypatch) -> None:
    """savefig wrote the plot in place: a kill or a failure in it left a cut PNG, and a reader met one half written."""
    from matplotlib.figure import Figure

    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    write_report(tmp_path)
    plot = tmp_path / "acc_by_task_pos_enc.png"
    before = plot.read_bytes()

    def cut_short(self, fname, **kwargs):
        Path(fname).write_bytes(before[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", cut_short)
    with pytest.raises(OSError, match="No space"):
        write_report(tmp_path)
    assert plot.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_report_py_stopped_by_a_signal_is_one_line_and_leaves_the_report_before(tmp_path: Path, sig: str) -> None:
    """SIGTERM had report.py die where it stood (a work folder left, no word), SIGINT printed a traceback."""
    import signal

    from .conftest import ROOT, signalled_after_imports

    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    write_report(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code, said = signalled_after_imports([str(ROOT / "scripts" / "report.py"), str(tmp_path)], sig)
    assert code == 128 + signal.Signals[sig]
    assert said == [
        f"interrupted ({sig}): each file of the report is whole, the old or the new; run it again for a report of the "
        "jobs now"
    ]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_first_report_whose_view_fails_says_why(tmp_path: Path, monkeypatch) -> None:
    """With no view before to put back, the failure itself is what the report says."""
    add_job(tmp_path, "s0", ["seed=0"], 0.5)

    def full_disk(*args) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_board", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        write_report(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]


def test_a_report_is_not_thrown_by_another_reports_folders_vanishing(tmp_path: Path, monkeypatch) -> None:
    """Looking for job folders, a report walked into another report's work folder (or the view it was replacing)
    just as that report deleted it: "No such file or directory: '<sweep>/.tensorboard-pf7d3a4d'", exit 1 (one in
    fifteen, three reports 0.3 s apart)."""
    import os

    add_job(tmp_path, "s0", ["seed=0"], 0.5)
    write_report(tmp_path)
    (tmp_path / ".report-another" / "tensorboard" / "seed=0").mkdir(parents=True)
    scandir = os.scandir

    def vanishing(path=".", *args):  # the other report's folders, deleted as they are listed
        if ".report-another" in str(path) or str(path).endswith("tensorboard"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return scandir(path, *args)

    monkeypatch.setattr(os, "scandir", vanishing)
    assert [r["job"] for r in report.collect(tmp_path)] == ["s0"]
