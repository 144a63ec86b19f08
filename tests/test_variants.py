"""Every variant trains end to end (fast_dev_run), through the same train() that scripts/train.py calls."""

import itertools

import pytest

from attnlab.pooling import POOLINGS
from attnlab.posenc import POS_ENCODINGS
from attnlab.scaling import SCALES
from attnlab.train import train

from .conftest import TINY

VARIANTS = [
    *(f"model.pos_enc={p}" for p in POS_ENCODINGS.names()),
    *(f"model.pool={p}" for p in POOLINGS.names()),
    *(f"model.scale={s}" for s in SCALES.names()),
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains(compose_cfg, tmp_path, variant: str) -> None:
    cfg = compose_cfg(*TINY, "data=halfswap", variant, "model.num_heads=2", "trainer.fast_dev_run=true")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert (tmp_path / "metrics.json").is_file()


@pytest.mark.parametrize("pos_enc,pool", list(itertools.product(POS_ENCODINGS.names(), POOLINGS.names())))
def test_every_combination_runs_one_step(compose_cfg, pos_enc: str, pool: str) -> None:
    cfg = compose_cfg(*TINY, f"model.pos_enc={pos_enc}", f"model.pool={pool}", "trainer.fast_dev_run=true")
    cfg.diagnostics = False  # the combinations, not the logging, are under test here
    assert train(cfg)["global_step"] == 1
