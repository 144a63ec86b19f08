"""How a result is called (attnlab.verdict): the convergence rule is early stopping's, each seed is judged by
its own interval, and a cell's verdict never hides a disagreement between seeds."""

from __future__ import annotations

import pytest

from attnlab.train import train
from attnlab.verdict import cell_verdict, converged, epochs_without_improvement, seed_verdict, wilson

from .conftest import TINY, compose_train


@pytest.mark.parametrize(
    "acc,n,expected",
    [
        (0.5, 1024, (0.4694, 0.5306)),
        (0.0, 10, (0.0, 0.2775)),
        (1.0, 10, (0.7225, 1.0)),
        (0.59, 100, (0.4920, 0.6813)),
    ],
)
def test_wilson_interval(acc, n, expected) -> None:
    assert wilson(acc, n) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    "seeds,expected",
    [
        # the cases, n_test = 1024, every seed converged
        ([0.8, 0.5, 0.5], "mixed (above chance: seed 0; chance: seed 1, 2)"),  # a mean of 0.6 read "chance"
        ([0.59, 0.59, 0.59], "above chance"),  # 6 standard errors above chance, read "chance"
        ([1.0, 1.0, 0.5], "mixed (learned: seed 0, 1; chance: seed 2)"),  # read "partial"
        ([1.0, 0.995, 0.93], "learned"),
        ([0.5, 0.49, 0.51], "chance"),
        ([0.31, 0.30, 0.32], "below chance"),
        ([0.89, 0.95, 0.99], "mixed (above chance: seed 0; learned: seed 1, 2)"),  # 0.89's interval starts below 0.9
    ],
)
def test_cell_verdicts_from_each_seeds_interval(seeds, expected) -> None:
    called = [(i, seed_verdict(acc, 1024, True)) for i, acc in enumerate(seeds)]
    assert cell_verdict(called) == expected


@pytest.mark.parametrize(
    "acc,n,expected",
    [
        (0.62, 50, "inconclusive"),  # [0.48, 0.74]: holds 0.5, and a model at 0.7 alike
        (0.58, 100, "inconclusive"),
        (0.5, 64, "inconclusive"),  # [0.38, 0.62]
        (0.5, 128, "chance"),  # [0.41, 0.59]
        (0.53, 1024, "chance"),
        (1.0, 34, "above chance"),  # [0.898, 1]: 34 sequences cannot show "learned"
        (1.0, 35, "learned"),
    ],
)
def test_chance_needs_an_interval_that_rules_out_a_real_effect(acc, n, expected) -> None:
    assert seed_verdict(acc, n, is_converged=True) == expected


def test_a_seed_at_chance_that_was_still_learning_is_not_converged() -> None:
    assert seed_verdict(0.5, 1024, is_converged=False) == "not converged"
    assert seed_verdict(1.0, 1024, is_converged=False) == "learned"  # learned needs no plateau
    assert cell_verdict([(0, "chance"), (1, "not converged"), (2, "chance")]) == "not converged"


def test_the_plateau_rule() -> None:
    assert epochs_without_improvement([0.7, 0.6, 0.6, 0.6, 0.6], 1e-3) == 3
    assert epochs_without_improvement([0.7, 0.6, 0.6, 0.6, 0.59], 1e-3) == 0
    assert epochs_without_improvement([0.7, 0.6, 0.6, 0.6, 0.5995], 1e-3) == 3  # less than min_delta
    # a gain smaller than min_delta does not move the best: two small steps are still no improvement
    assert epochs_without_improvement([0.7, 0.6, 0.5995, 0.5992, 0.5991], 1e-3) == 3
    assert epochs_without_improvement([0.7, 0.6, 0.5995, 0.5992, 0.5985], 1e-3) == 0  # 0.0015 below 0.6
    assert converged([0.7, 0.6, 0.6, 0.6, 0.6], None, 1e-3)  # DEFAULT_PATIENCE = 3
    assert not converged([0.7, 0.6, 0.6, 0.6], None, 1e-3)
    assert not converged([0.6, 0.6, 0.6], None, 1e-3)  # cannot tell yet
    assert not converged([], 4, 1e-3)  # no validation at all


def test_the_rule_is_where_early_stopping_stopped(tmp_path) -> None:
    """The report's convergence rule and the run's early stopping are one rule: on a real run, it first
    fires at the epoch where Lightning's EarlyStopping stopped training."""
    overrides = [*TINY, "data=uniform", "trainer.max_epochs=40", "early_stop.patience=2", "early_stop.min_delta=0.01"]
    metrics = train(compose_train(tmp_path, *overrides))
    history = metrics["history"]["val/loss"]
    assert metrics["ended_by"] == "early_stop" and metrics["stopped_early"] and metrics["converged"]
    assert metrics["epochs"] == len(history) < 40
    assert epochs_without_improvement(history, 0.01) == 2
    assert all(epochs_without_improvement(history[:k], 0.01) < 2 for k in range(len(history)))


@pytest.mark.parametrize("max_steps", [2, 4])  # mid-epoch (4 batches an epoch) and at an epoch's end
def test_a_run_cut_short_by_max_steps_is_not_converged(tmp_path, max_steps) -> None:
    """max_steps ends training with val/loss still falling: "not converged", whatever early stopping is
    set to, and early stopping does not fail the run when the last epoch had no validation."""
    overrides = [
        *TINY,
        "data=uniform",
        "trainer.max_epochs=50",
        "early_stop.patience=4",
        f"+trainer.max_steps={max_steps}",
    ]
    metrics = train(compose_train(tmp_path, *overrides))
    assert metrics["ended_by"] == "max_steps" and metrics["global_step"] == max_steps
    assert not metrics["stopped_early"] and not metrics["converged"]
