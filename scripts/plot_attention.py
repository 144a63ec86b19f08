"""Draw what a trained run attends to: one validation sequence per class and its attention weights.

python scripts/plot_attention.py outputs/runs/<run> docs/attention_halfswap.png [--ckpt best] [--layer 0] [--head 0]
"""

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from attnlab.checkpoint import checkpoint_path, load_module
from attnlab.data import SyntheticDataModule
from attnlab.errors import ConfigError
from attnlab.runs import run_config


def plot(run_dir: Path, out: Path, ckpt: str, layer: int, head: int) -> None:
    c = run_config(run_dir)
    module = load_module(checkpoint_path(run_dir, ckpt))
    data = SyntheticDataModule(**c["data"], train_seed=c["seed"])
    data.setup()
    x, y = data.splits["val"]
    picks = [int((y == label).nonzero()[0]) for label in (0, 1)]  # the first example of each class
    with torch.no_grad():
        logits, maps = module.net.forward_with_weights(x[picks])
    weights = maps[layer].weights[:, head]  # (2, L', L')
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), gridspec_kw={"height_ratios": [1, 3]}, constrained_layout=True)
    for col, (name, i) in enumerate((("A", 0), ("B", 1))):
        seq = x[picks[i], :, 0]
        axes[0, col].bar(range(len(seq)), seq.numpy(), color="tab:gray")
        axes[0, col].set_title(f"class {name} (predicted {'AB'[int(logits[i].argmax())]})")
        axes[0, col].set_xlim(-0.5, len(seq) - 0.5)
        axes[0, col].set_ylabel("x")
        im = axes[1, col].imshow(weights[i].numpy(), cmap="viridis", vmin=0)
        axes[1, col].set_xlabel("key position j")
        axes[1, col].set_ylabel("query position i")
        fig.colorbar(im, ax=axes[1, col], shrink=0.8)
    m = c["model"]
    which = module.loaded_from  # read with the weights
    fig.suptitle(
        f"{c['data']['task']}, pos_enc={m['pos_enc']}, pool={m['pool']}: attention weights, layer {layer} head {head}\n"
        f"{ckpt} checkpoint: epoch {which['epoch']}, step {which['global_step']}",
        fontsize=10,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--ckpt", default="best")
    parser.add_argument("--layer", type=int, default=0)
    parser.add_argument("--head", type=int, default=0)
    args = parser.parse_args()
    try:
        plot(args.run_dir, args.out, args.ckpt, args.layer, args.head)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
