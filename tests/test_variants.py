"""Every variant trains end to end, through the same train() that scripts/train.py calls, and reports
the accuracy of its best checkpoint on its test set (recomputed here from the file)."""

import itertools

import pytest

from attnlab.evaluate import evaluate_run
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
    cfg = compose_cfg(*TINY, "data=halfswap", variant, "model.num_heads=2")
    metrics = train(cfg)
    assert metrics["global_step"] == 4 and metrics["tested_checkpoint"]["file"] == "checkpoints/best.ckpt"
    # its best checkpoint, scored independently on the run's own test set, gives the reported number
    assert (
        evaluate_run(tmp_path, {"seq_lens": [8], "n": None, "batch_size": 256, "untrained": "refuse"})["lengths"]["8"][
            "acc"
        ]
        == metrics["test/acc"]
    )


@pytest.mark.parametrize("pos_enc,pool", list(itertools.product(POS_ENCODINGS.names(), POOLINGS.names())))
def test_every_combination_runs_one_step(compose_cfg, pos_enc: str, pool: str) -> None:
    cfg = compose_cfg(*TINY, f"model.pos_enc={pos_enc}", f"model.pool={pool}", "trainer.fast_dev_run=true")
    cfg.diagnostics = False  # the combinations, not the logging, are under test here
    assert train(cfg)["global_step"] == 1
