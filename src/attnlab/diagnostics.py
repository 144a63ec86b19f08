"""What the model looks at, logged to TensorBoard at the end of every validation epoch.

- images: attention weights of one fixed validation example per class, every layer and head, on
  one fixed colour scale 0..1 (bar at the right edge), and the positional encoding where there is
  one, on its own range (Images tab; the slider shows them evolve);
- scalars: attention entropy (nats; `attn/entropy_uniform` = log L is the no-preference reference),
  mean max attention probability, std of pre-softmax scores within a row, gradient norm;
- permutation sensitivity: `val/acc_shuffled`, accuracy on the validation sequences with
  positions shuffled. Equal to `val/acc` for a permutation-invariant model; a model that uses
  position falls to chance on halfswap.

All of it runs outside the training step, except the gradient norm, taken every
`trainer.log_every_n_steps` steps without a host sync. The maps come from the explicit attention
path, which materialises (L, L) matrices: for long sequences fewer examples are used, and past
MAX_MAP_ELEMENTS even for one the maps are skipped (with a warning); shuffled accuracy stays.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from attnlab.model import AttentionMap
from attnlab.module import accuracy_metric

CLASS_NAMES = ("A", "B")
MAX_MAP_ELEMENTS = 2**21  # per explicit forward: 8 MB per (B, H, L, L) float32 tensor, training stays the peak
MAX_IMAGE_CELLS = 256  # longer maps are average-pooled down to this many rows and columns


def heatmap(matrix: Tensor, value_range: tuple[float, float] | None = None, min_size: int = 192) -> Tensor:
    """(R, C) values -> (3, H, W) uint8 image in the viridis colormap, each cell a visible square.

    `value_range` (lo, hi): a fixed colour scale, drawn as a bar at the right edge (bottom lo, top hi),
    so images of different runs and epochs compare (attention weights: (0, 1); a near-uniform map then
    looks flat, as it is). None: stretched to the matrix's own min..max (tables of encodings)."""
    m = matrix.detach().float().cpu()
    if max(m.shape) > MAX_IMAGE_CELLS:
        m = F.adaptive_avg_pool2d(m[None], (min(m.shape[0], MAX_IMAGE_CELLS), min(m.shape[1], MAX_IMAGE_CELLS)))[0]
    lo, hi = value_range or (m.min().item(), m.max().item())
    m = ((m - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    lut = torch.tensor(matplotlib.colormaps["viridis"](range(256))[:, :3], dtype=torch.float32)  # (256, 3)
    rgb = lut[(m * 255).round().long()]  # (R, C, 3)
    k = max(1, math.ceil(min_size / max(m.shape)))
    rgb = rgb.repeat_interleave(k, 0).repeat_interleave(k, 1)  # (H, W, 3)
    if value_range is not None:
        height = rgb.shape[0]
        ramp = lut[torch.linspace(255, 0, height).round().long()]  # (H, 3): top = hi
        bar = ramp[:, None, :].expand(height, max(8, rgb.shape[1] // 16), 3)
        gap = torch.ones(height, 4, 3)  # white
        rgb = torch.cat((rgb, gap, bar), dim=1)
    return (rgb * 255).to(torch.uint8).permute(2, 0, 1)


def attention_stats(maps: list[AttentionMap]) -> dict[str, Tensor]:
    """Averages over layers, heads, rows and examples of the explicit attention maps."""
    weights = torch.stack([m.weights for m in maps])  # (layers, B, H, L, L)
    scores = torch.stack([m.scores for m in maps])
    entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1)  # (layers, B, H, L) nats per row
    return {
        "attn/entropy": entropy.mean(),
        "attn/entropy_uniform": torch.tensor(math.log(weights.shape[-1])),
        "attn/max_prob": weights.amax(-1).mean(),
        "attn/score_std": scores.std(-1).mean(),
    }


def shuffle_positions(x: Tensor, seed: int) -> Tensor:
    """Each sequence of x (B, L, n) with its positions in its own random order (fixed by seed)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(x.shape[0], x.shape[1], generator=g).argsort(dim=1).to(x.device)  # (B, L)
    return x.gather(1, order[..., None].expand_as(x))


class AttentionDiagnostics(pl.Callback):
    def __init__(self, num_stat_examples: int = 256) -> None:
        self.num_stat_examples = num_stat_examples
        self.examples: tuple[Tensor, Tensor] | None = None
        self.tested: dict[str, float] = {}  # the tested checkpoint's attention statistics (on_test_epoch_start)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        x, y = trainer.datamodule.splits["val"]
        net = pl_module.net
        d_model = net.head.in_features
        length = net.pool.prepare(torch.zeros(1, x.shape[1], d_model, device=x.device)).shape[1]  # + a cls token
        per_example = len(net.layers) * net.layers[0].num_heads * length**2
        n_stat = min(self.num_stat_examples, len(x), MAX_MAP_ELEMENTS // per_example)
        if n_stat < len(CLASS_NAMES):
            rank_zero_warn(f"attention maps not logged: seq_len {x.shape[1]} is too long for the explicit path")
            self.examples = None
        else:
            first_of_class = [int((y == c).nonzero()[0]) for c in range(len(CLASS_NAMES))]  # fixed examples
            self.examples = x[first_of_class], x[:n_stat]
        self.grad_norm_sum = torch.zeros((), device=pl_module.device)
        self.grad_norm_count = 0

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0:
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            self.grad_norm_sum += torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            self.grad_norm_count += 1

    # Permutation sensitivity, on the validation set every epoch and on the test set at the end.
    def start_shuffled(self, pl_module: pl.LightningModule) -> None:
        self.shuffled = accuracy_metric(pl_module.net.head.out_features).to(pl_module.device)

    @torch.no_grad()
    def count_shuffled(self, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.shuffled.update(pl_module(shuffle_positions(x, seed=batch_idx)).argmax(-1), y)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_shuffled(pl_module)

    @torch.no_grad()
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_shuffled(pl_module)
        # The tested checkpoint's attention statistics, on the sequences every validation epoch used: the
        # numbers a report sets beside the test accuracy come from the same weights.
        self.tested = {}
        if self.examples is not None:
            _, maps = pl_module.net.forward_with_weights(self.examples[1])
            self.tested = {name: float(value) for name, value in attention_stats(maps).items()}

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        self.count_shuffled(pl_module, batch, batch_idx)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        self.count_shuffled(pl_module, batch, batch_idx)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("test/acc_shuffled", self.shuffled.compute())  # compute() has reduced over processes

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        pl_module.log("val/acc_shuffled", self.shuffled.compute())
        if self.grad_norm_count:
            pl_module.log("train/grad_norm", self.grad_norm_sum / self.grad_norm_count, sync_dist=True)
            self.grad_norm_sum.zero_()
            self.grad_norm_count = 0
        if self.examples is None:
            return
        fixed, stat_batch = self.examples
        _, maps = pl_module.net.forward_with_weights(stat_batch)
        for name, value in attention_stats(maps).items():
            pl_module.log(name, value, sync_dist=True)
        self.log_images(trainer, pl_module, fixed)

    def log_images(self, trainer: pl.Trainer, pl_module: pl.LightningModule, fixed: Tensor) -> None:
        writers = [lg.experiment for lg in trainer.loggers if hasattr(lg.experiment, "add_image")]
        if not writers:
            return
        _, maps = pl_module.net.forward_with_weights(fixed)
        images = {}
        for layer, layer_map in enumerate(maps):
            for head in range(layer_map.weights.shape[1]):
                for c, class_name in enumerate(CLASS_NAMES):
                    tag = f"attention/class_{class_name}/layer{layer}_head{head}"
                    images[tag] = heatmap(layer_map.weights[c, head], value_range=(0.0, 1.0))
        table = pl_module.net.pos_enc.table(fixed.shape[1])
        if table is not None:
            images["pos_enc"] = heatmap(table)
        step = max(trainer.global_step - 1, 0)  # the step Lightning logs this validation's scalars at
        for writer in writers:
            for tag, image in images.items():
                writer.add_image(tag, image, step)
