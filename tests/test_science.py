"""The research result, through the real entry point at the default sizes.

Attention + max-pooling is permutation invariant: with no positional encoding it can
solve `uniform` but not `halfswap` (chance); with one, `halfswap` is learnable.
"""

import pytest

from .conftest import read_metrics

CASES = [
    (["data=uniform"], 0.99, 1.0),
    (["data=halfswap", "model.pos_enc=none"], 0.40, 0.60),
    (["data=halfswap", "model.pos_enc=sinusoidal"], 0.99, 1.0),
    (["data=halfswap", "model.pos_enc=learned"], 0.99, 1.0),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,low,high", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_science(train_cli, args: list[str], low: float, high: float) -> None:
    proc, run_dir = train_cli(*args, "trainer.enable_progress_bar=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = read_metrics(run_dir)["test/acc"]
    assert low <= acc <= high, f"{args}: test/acc={acc}"
