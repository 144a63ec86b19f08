"""The research result, through the real entry point at the default sizes.

Attention + max-pooling is permutation invariant: with no positional encoding it can
solve `uniform` but not `halfswap` (chance); with one, `halfswap` is learnable, except
with ALiBi, whose symmetric |i - j| bias cannot tell a sequence from its reverse (and
halfswap's class B is class A reversed). `test/acc_shuffled` is the same test set with
positions shuffled: a model that solved halfswap by position falls back to chance on it.
"""

import pytest

from .conftest import read_metrics

LEARNED, CHANCE = (0.99, 1.0), (0.40, 0.60)
CASES = {
    # overrides: (test/acc range, test/acc_shuffled range)
    "data=uniform": (LEARNED, LEARNED),
    "data=halfswap model.pos_enc=none": (CHANCE, CHANCE),
    "data=halfswap model.pos_enc=sinusoidal": (LEARNED, CHANCE),
    "data=halfswap model.pos_enc=learned": (LEARNED, CHANCE),
    "data=halfswap model.pos_enc=rope": (LEARNED, CHANCE),
    "data=halfswap model.pos_enc=alibi": (CHANCE, CHANCE),
}


@pytest.mark.slow
@pytest.mark.parametrize("overrides", CASES)
def test_science(train_cli, overrides: str) -> None:
    proc, run_dir = train_cli(*overrides.split(), "trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = read_metrics(run_dir)
    (low, high), (shuffled_low, shuffled_high) = CASES[overrides]
    assert low <= metrics["test/acc"] <= high, f"{overrides}: {metrics}"
    assert shuffled_low <= metrics["test/acc_shuffled"] <= shuffled_high, f"{overrides}: {metrics}"
