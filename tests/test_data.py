"""The synthetic tasks and the whole-batch loader."""

from types import SimpleNamespace

import pytest
import torch

from attnlab.data import SyntheticDataModule, TensorBatches
from attnlab.errors import ConfigError
from attnlab.tasks import TASKS, make_split

from .conftest import TINY, data_args


@pytest.mark.parametrize("task", TASKS.names())
@pytest.mark.parametrize("dim", [1, 3])
def test_shapes_and_balance(task: str, dim: int) -> None:
    x, y = make_split(task, n=501, seq_len=10, dim=dim, seed=0)
    assert x.shape == (501, 10, dim) and x.dtype == torch.float32
    assert y.shape == (501,) and y.dtype == torch.int64
    assert set(y.tolist()) == {0, 1}
    assert abs(int(y.sum()) - (501 - int(y.sum()))) <= 1  # balanced to within one


def test_uniform_ranges() -> None:
    x, y = make_split("uniform", n=400, seq_len=16, dim=2, seed=0)
    a, b = x[y == 0], x[y == 1]
    assert a.min() >= 0 and a.max() < 1
    assert b.min() >= 1 and b.max() < 2


def test_halfswap_ranges_per_half() -> None:
    x, y = make_split("halfswap", n=400, seq_len=16, dim=2, seed=0)
    first, second = x[:, :8], x[:, 8:]
    for low, high in ((first[y == 0], second[y == 0]), (second[y == 1], first[y == 1])):
        assert low.min() >= 0 and low.max() < 1
        assert high.min() >= 1 and high.max() < 2
    # Same multiset of ranges in both classes: the number of high values does not give the class away.
    assert ((x >= 1).sum(dim=(1, 2)) == 8 * 2).all()


@pytest.mark.parametrize("seq_len", [1, 7, 33])
def test_halfswap_refuses_odd_length(seq_len: int) -> None:
    with pytest.raises(ConfigError, match=rf"data.seq_len={seq_len} .*even"):
        TASKS.build("halfswap").check(seq_len)  # the one check, run when the config is validated


@pytest.mark.parametrize("task", TASKS.names())
def test_seeding(task: str) -> None:
    x1, y1 = make_split(task, 64, 8, 1, seed=5)
    x2, y2 = make_split(task, 64, 8, 1, seed=5)
    x3, _y3 = make_split(task, 64, 8, 1, seed=6)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


def test_eval_sets_follow_the_data_seed_only() -> None:
    def splits(train_seed: int, seed: int = 1234) -> dict:
        dm = SyntheticDataModule(
            **data_args(n_train=64, n_val=32, n_test=32, seq_len=8, seed=seed), train_seed=train_seed
        )
        dm.setup()
        return dm.splits

    a, b, c = splits(0), splits(1), splits(0, seed=99)
    assert torch.equal(a["val"][0], b["val"][0]) and torch.equal(a["test"][0], b["test"][0])
    assert not torch.equal(a["train"][0], b["train"][0])
    assert not torch.equal(a["val"][0], c["val"][0])
    assert not torch.equal(a["val"][0], a["test"][0])  # no split is a copy of another


def test_batches_cover_each_sample_once_and_reshuffle_per_epoch() -> None:
    x = torch.arange(10).float().view(10, 1, 1)
    trainer = SimpleNamespace(current_epoch=0, global_rank=0, world_size=1)  # what a pass reads of the trainer
    batches = TensorBatches(x, torch.arange(10), batch_size=4, shuffle=True, seed=0, trainer=trainer)
    assert len(batches) == 3
    first = torch.cat([b[1] for b in batches])
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(first, torch.cat([b[1] for b in batches]))  # same epoch, same order
    trainer.current_epoch = 1
    assert not torch.equal(first, torch.cat([b[1] for b in batches]))
    assert [len(b[0]) for b in batches] == [4, 4, 2]


def test_ranks_split_the_data() -> None:
    x, y = torch.zeros(10, 1, 1), torch.arange(10)
    ranks = [SimpleNamespace(current_epoch=0, global_rank=r, world_size=2) for r in (0, 1)]
    shards = [torch.cat([b[1] for b in TensorBatches(x, y, 3, trainer=r)]) for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 5
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())


def test_overfit_batches_repeat_the_same_batches(compose_cfg) -> None:
    """debug=overfit: 'the same 2 batches' every epoch, not a fresh shuffle each time."""
    import pytorch_lightning as pl

    from attnlab.train import train

    class Seen(pl.Callback):
        def __init__(self) -> None:
            self.batches: dict[int, list[torch.Tensor]] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.batches.setdefault(trainer.current_epoch, []).append(batch[0].clone())

    seen = Seen()
    cfg = compose_cfg("debug=overfit", *TINY, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=1")
    train(cfg, extra_callbacks=[seen])
    epochs = [seen.batches[e] for e in range(3)]
    assert all(len(b) == 2 for b in epochs)
    assert all(torch.equal(a, b) for later in epochs[1:] for a, b in zip(epochs[0], later, strict=True))
