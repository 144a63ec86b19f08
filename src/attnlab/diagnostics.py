"""What the model looks at, logged to TensorBoard (`AttentionDiagnostics`).

- every validation epoch: attention entropy (nats; uniform attention has log L: `attn/entropy_uniform` in
  the tested checkpoint's statistics), mean max attention probability, std of the pre-softmax scores within
  a row, the gradient norm, and `val/acc_shuffled`: the accuracy with each sequence's positions shuffled,
  equal to `val/acc` for a permutation-invariant model, at chance on halfswap for one that uses position;
- the tested checkpoint's figures (Images tab): one fixed validation sequence per class above its attention
  weights, for every layer and head, and the positional encoding's table.

The maps come from the explicit path, which materialises (L, L) matrices: long sequences use fewer examples,
and past MAX_MAP_ELEMENTS even for one the maps are skipped (with a warning)."""

import functools
import io
import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib import rc_context
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor

from attnlab.model import AttentionMap
from attnlab.module import accuracy_metric, validation_step_logged

CLASS_NAMES = ("A", "B")
MAX_MAP_ELEMENTS = 2**21  # per explicit forward: 8 MB per (B, H, L, L) float32 tensor, training stays the peak
STAT_EXAMPLES = 256  # validation sequences the tested checkpoint's attention statistics average over, at most
EPOCH_STAT_EXAMPLES = 64  # each validation epoch's, the first of those: a quarter of the cost, twice the standard error


@torch.no_grad()
def attention_figure(net: torch.nn.Module, x: Tensor, layer: int, head: int, title: str) -> Figure:
    """One sequence per class, x (2, L, n): each input above its attention weights (query rows, key columns),
    both inputs on one scale, both maps on one colour scale. The next call of the same shape redraws it
    (`attention_layout`)."""
    logits, maps = net.forward_with_weights(x)
    weights = maps[layer].weights[:, head].float().cpu().numpy()  # (2, L', L'); L' = L + a cls token's row
    finite = weights[np.isfinite(weights)]  # a NaN (a diverged model's) must not blank the other map
    top = float(finite.max()) if finite.size else 1.0
    inputs = x[:, :, 0].float().cpu().numpy()  # (2, L): each sequence's first channel (x's memory on a CPU)
    inputs = np.where(np.isfinite(inputs), inputs, np.nan)  # a copy: an infinite input left out, as a NaN is
    prefix = weights.shape[-1] - x.shape[1]  # a cls token's column: no input
    fig, strips, titles, heats = attention_layout(weights.shape[-1], prefix, strip_limits(inputs))
    for i, name in enumerate(CLASS_NAMES):
        strips[i].patches[0].set_data(values=inputs[i])
        titles[i].set_text(f"class {name} (predicted {CLASS_NAMES[int(logits[i].argmax())]})")
        heats[i].images[0].set_data(weights[i])
        heats[i].images[0].set_clim(0, top)
    fig.suptitle(f"{title}\nattention weights, layer {layer} head {head}", fontsize=10)
    return fig


def strip_limits(inputs: np.ndarray) -> tuple[float, float]:
    """The input strips' value range: 0 and the finite inputs, out to 1, 2 or 5 times a power of ten, symmetric
    about 0 for inputs of both signs. Inputs alike (a task's) share it, and so the strips' axes, drawn once
    (`attention_layout`); a few such ranges cover any task (each is a figure kept)."""
    finite = inputs[np.isfinite(inputs)]  # (a diverged input's NaN is left out, as matplotlib leaves it out)
    low, high = -float(np.min(finite, initial=0)), float(np.max(finite, initial=0))  # (low: how far below 0)
    if low > 0 and high > 0:
        low = high = max(low, high)
    low, high = 0.0 - round_up(low), round_up(high)
    return (low, high) if high > low else (0.0, 1.0)  # (all zeros: 0 to 1)


def round_up(value: float) -> float:
    """0 for value <= 0, else the least of 1, 2 and 5 times a power of ten that is >= value."""
    if value <= 0:
        return 0.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10, 20) if m * power >= value)  # (20: log10 rounded down a decade)


# Laid out once per process and shape, each later call replacing the data (REDRAWN).
@functools.cache
def attention_layout(length: int, prefix: int, limits: tuple[float, float]) -> tuple[Figure, list, list, list]:
    """The attention figure's input strips, their titles and the maps' axes for `length` key positions (the first
    `prefix` without an input), the strips over `limits`; what each call changes is listed in REDRAWN."""
    fig = Figure(figsize=(9, 5.5))  # laid out by hand: a layout engine would double the figure's cost
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 3], left=0.07, right=0.88, top=0.86, bottom=0.09, hspace=0.25)
    with rc_context({"axes.titley": 1.0}):  # the strips' titles at their top: a draw would place a hidden one afar
        strips = [fig.add_subplot(grid[0, i]) for i in range(2)]
    heats = [fig.add_subplot(grid[1, i]) for i in range(2)]
    edges = np.arange(prefix, length + 1) - 0.5  # one step per key position that has an input
    strips[1].sharey(strips[0])  # both inputs on one scale; the right-hand axes repeat the left's ticks unlabelled
    strips[0].set_ylim(limits)
    for strip, heat in zip(strips, heats, strict=True):
        strip.stairs(np.zeros(length - prefix), edges, fill=True, color="tab:gray")
        strip.tick_params(labelbottom=False)  # the map below labels the key positions
        image = heat.imshow(np.zeros((length, length)), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        heat.set_xlabel("key position j" + (" (0: the cls token)" if prefix else ""))
        for ax in (strip, heat):
            ax.set_xlim(-0.5, length - 0.5)  # the strip lines up with the key columns
            few_ticks(ax)
    strips[0].set_ylabel("x")
    heats[0].set_ylabel("query position i")
    strips[1].tick_params(labelleft=False)
    heats[1].tick_params(labelleft=False)
    beside = heats[1].get_position()
    bar = fig.add_axes((beside.x1 + 0.02, beside.y0, 0.015, beside.height))
    fig.colorbar(image, cax=bar, label="weight", ticks=MaxNLocator(5))
    titles = [strip.set_title("") for strip in strips]  # (where a matplotlibrc's axes.titlelocation puts them)
    # the inputs, the predictions and the maps, each axes' frame drawn over them
    drawn = [(strip.patches[0], title) for strip, title in zip(strips, titles, strict=True)]
    drawn += [(heat.images[0],) for heat in heats]
    REDRAWN[fig] = [a for ax, d in zip(strips + heats, drawn, strict=True) for a in (*d, *ax.spines.values())]
    REDRAWN[fig] += [bar, fig.suptitle("")]
    return fig, strips, titles, heats


@functools.cache
def encoding_layout(shape: tuple[int, int], columns: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    image = ax.imshow(np.zeros(shape), cmap="viridis", aspect="auto")
    ax.set_xlabel(columns)
    ax.set_ylabel("position i")
    few_ticks(ax)
    bar = fig.colorbar(image, ax=ax, label="value", ticks=MaxNLocator(5))
    fig.subplots_adjust(top=0.85)
    REDRAWN[fig] = [image, *ax.spines.values(), bar.ax, fig.suptitle("")]
    return fig, image


# A laid-out figure -> the artists a redraw changes. The rest (the maps' axes, ticks and labels: most of a figure's
# cost) is rendered once and copied under them (`png`, matplotlib's blitting).
REDRAWN: dict[Figure, list[Artist]] = {}


@functools.cache
def background(fig: Figure) -> Any:
    """The figure rendered once without its REDRAWN artists (hidden: matplotlib before 3.11 draws an image
    marked animated all the same, and a NaN cell would show the first figure's map through)."""
    for artist in REDRAWN[fig]:
        artist.set_visible(False)
    FigureCanvasAgg(fig).draw()
    for artist in REDRAWN[fig]:
        artist.set_visible(True)
    return fig.canvas.copy_from_bbox(fig.bbox)


def png(fig: Figure) -> bytes:
    """A figure as PNG; a laid-out one (REDRAWN) by its background copied and its REDRAWN artists drawn over it,
    as a whole draw would."""
    if fig not in REDRAWN:  # drawn once (an evaluation's): whole
        FigureCanvasAgg(fig).draw()
    else:
        behind = background(fig)  # the first call gives the figure an Agg canvas and draws it whole
        fig.canvas.restore_region(behind)
        for artist in REDRAWN[fig]:
            fig.draw_artist(artist)
    canvas, buffer = fig.canvas, io.BytesIO()
    pixels = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    pixels.save(buffer, "png", compress_level=1)  # 15% larger than the default level, in half the time
    return buffer.getvalue()


def image_summary(tag: str, fig: Figure) -> Summary:
    """The figure as TensorBoard's image (SummaryWriter.add_figure would take its pixels through float32)."""
    encoded, (width, height) = png(fig), fig.canvas.get_width_height()
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def few_ticks(ax: Any) -> None:
    """At most five whole-number ticks per axis: ticks are most of a figure's cost. Outward and no grid, whatever a
    matplotlibrc says: nothing of the axes may lie over a map, which `png` draws over them."""
    ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax.tick_params(direction="out")
    ax.grid(False)


def encoding_figure(pos_enc: torch.nn.Module, length: int, title: str) -> Figure | None:
    """The positional encoding's table over `length` positions; None where it has none; redrawn (`encoding_layout`)."""
    table = pos_enc.table(length)
    if table is None:
        return None
    values = table.detach().float().cpu().numpy()
    fig, image = encoding_layout(values.shape, pos_enc.table_columns)
    image.set_data(values)
    image.set_clim(np.nanmin(values), np.nanmax(values))  # as imshow scales a table it is given
    fig.suptitle(f"{title}\npositional encoding", fontsize=10)
    return fig


def describe(cfg: dict[str, Any]) -> str:
    """A figure's words for the run: task and model."""
    return f"{cfg['data']['task']}, pos_enc={cfg['model']['pos_enc']}, pool={cfg['model']['pool']}"


def checkpoint_title(run: str, which: dict[str, int] | None, name: str = "tested") -> str:
    """A figure's first line: the run (`describe`) and which checkpoint drew it."""
    at = f"epoch {which['epoch']}, step {which['global_step']}" if which else "final weights, no checkpoint"
    return f"{run}; {name} checkpoint: {at}"


def attention_stats(maps: list[AttentionMap]) -> dict[str, Tensor]:
    """Averages over layers, heads, rows and examples of the explicit attention maps."""
    weights = torch.stack([m.weights for m in maps])  # (layers, B, H, L, L)
    scores = torch.stack([m.scores for m in maps])
    entropy = -(weights * weights.clamp_min(1e-30).log()).sum(-1)  # (layers, B, H, L) nats per row
    # Each row's sample std written out: torch.std over rows of a few dozen scores is ~10x slower, and this
    # runs every validation epoch.
    centred = scores - scores.mean(-1, keepdim=True)
    std = (centred.square().sum(-1) / (scores.shape[-1] - 1)).sqrt()
    return {
        "attn/entropy": entropy.mean(),
        "attn/entropy_uniform": torch.tensor(math.log(weights.shape[-1])),
        "attn/max_prob": weights.amax(-1).mean(),
        "attn/score_std": std.mean(),
    }


def shuffle_positions(x: Tensor, seed: int) -> Tensor:
    """Each sequence of x (B, L, n) with its positions in its own random order (fixed by seed)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(x.shape[0], x.shape[1], generator=g).argsort(dim=1).to(x.device)  # (B, L)
    return x.gather(1, order[..., None].expand_as(x))


class AttentionDiagnostics(pl.Callback):
    def __init__(self, run: str) -> None:
        self.run = run  # `describe` of the run: the figures' titles
        self.examples: tuple[Tensor, Tensor] | None = None  # (one per class, for figures; more, for statistics)
        self.tested: dict[str, float] = {}  # the tested checkpoint's attention statistics (on_test_epoch_start)
        self.figures: list[Summary] = []  # and its figures, for TensorBoard
        # this epoch's gradient norms so far, on the device; kept in checkpoints: a run resumed from mid-epoch
        # (interrupted.ckpt) averages the whole epoch's, as the uninterrupted run does
        self.grad_norms: list[Tensor] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        x, y = trainer.datamodule.splits["val"]
        net = pl_module.net
        per_example = len(net.layers) * net.layers[0].num_heads * (x.shape[1] + net.pool.prefix) ** 2  # + a cls
        n_stat = min(STAT_EXAMPLES, len(x), MAX_MAP_ELEMENTS // per_example)
        if n_stat < len(CLASS_NAMES):
            rank_zero_warn(f"attention maps not logged: seq_len {x.shape[1]} is too long for the explicit path")
        else:
            first_of_class = [int((y == k).nonzero()[0]) for k in range(len(CLASS_NAMES))]  # fixed examples
            x = x.to(pl_module.device, pl_module.dtype)  # as the model now is (trainer.precision=64-true: doubles)
            self.examples = x[first_of_class], x[:n_stat]

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0:
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            self.grad_norms.append(torch.nn.utils.get_total_norm(grads))  # on the device: no host sync

    def state_dict(self) -> dict[str, Any]:
        return {"grad_norms": [float(norm) for norm in self.grad_norms]}  # plain floats: weights_only loads

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.grad_norms = [torch.tensor(norm) for norm in state_dict.get("grad_norms", [])]

    def stats(self, pl_module: pl.LightningModule, n: int = STAT_EXAMPLES) -> dict[str, Tensor]:
        return attention_stats(pl_module.net.forward_with_weights(self.examples[1][:n])[1])

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.shuffled = accuracy_metric(pl_module.net.head.out_features).to(pl_module.device)

    @torch.no_grad()
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_validation_epoch_start(trainer, pl_module)
        # The tested checkpoint's attention statistics, on STAT_EXAMPLES validation sequences: the numbers a report
        # sets beside the test accuracy come from the same weights.
        if self.examples is not None:
            self.tested = {name: float(value) for name, value in self.stats(pl_module).items()}
            self.log_figures(trainer, pl_module, self.examples[0])

    @torch.no_grad()
    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if trainer.sanity_checking:  # its numbers are dropped (on_validation_epoch_end)
            return
        x, y = batch
        self.shuffled.update(pl_module.net(shuffle_positions(x, seed=batch_idx)).argmax(-1), y)

    on_test_batch_end = on_validation_batch_end

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("test/acc_shuffled", self.shuffled.compute())  # compute() has reduced over processes

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The epoch's diagnostics, written to the loggers at the step Lightning writes val/acc at (the epoch's last
        batch's) in one call: through `self.log` each value would cost more than its own computation (Lightning
        moves every logged key's whole record to the device), and no callback or progress bar reads them."""
        if trainer.sanity_checking:
            return
        scalars = {"val/acc_shuffled": float(self.shuffled.compute())}  # compute() has reduced over processes
        if self.grad_norms:
            norms = torch.stack([norm.to(pl_module.device) for norm in self.grad_norms])  # (some restored)
            scalars["train/grad_norm"] = float(trainer.strategy.reduce(norms.mean(), reduce_op="mean"))
            self.grad_norms.clear()
        if self.examples is not None:  # all but the uniform entropy, a constant: a flat chart says nothing
            stats = self.stats(pl_module, EPOCH_STAT_EXAMPLES)  # (the same sequences and weights in every DDP process)
            scalars.update({k: float(v) for k, v in stats.items() if k != "attn/entropy_uniform"})
            pl_module.history["attn/entropy"].append(scalars["attn/entropy"])
        pl_module.history["val/acc_shuffled"].append(scalars["val/acc_shuffled"])
        for logger in trainer.loggers:  # (each writes on the first process only; `epoch` as Lightning adds it)
            logger.log_metrics({**scalars, "epoch": trainer.current_epoch}, step=validation_step_logged(trainer))

    def log_figures(self, trainer: pl.Trainer, pl_module: pl.LightningModule, fixed: Tensor) -> None:
        """The tested checkpoint's labelled figures (Images tab; train.py writes them at its step): one per
        layer and head, and the positional encoding's. Drawn once, not every epoch: a figure costs about as
        much as an epoch."""
        if not any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers) or not trainer.is_global_zero:
            return  # (under DDP, one process writes them)
        net = pl_module.net
        title = checkpoint_title(self.run, pl_module.loaded_from)  # loaded_from None: the final weights (fast_dev_run)
        summaries = [  # each encoded at once: the next figure of its shape redraws it
            image_summary(f"attention/layer{layer}_head{head}", attention_figure(net, fixed, layer, head, title))
            for layer, block in enumerate(net.layers)
            for head in range(block.num_heads)
        ]
        if (table := encoding_figure(net.pos_enc, fixed.shape[1], title)) is not None:
            summaries.append(image_summary("pos_enc", table))
        self.figures = summaries
