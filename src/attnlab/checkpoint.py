"""Loading a trained run back: its config and a checkpoint, safely.

Checkpoints are read with `torch.load(weights_only=True)`: hyperparameters are plain
values, so nothing needs unpickling, and a crafted pickle is refused without running.
Every failure is a ConfigError naming the file; nothing falls back to random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from attnlab.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a refused path answers before Lightning is imported
    from attnlab.module import LitClassifier


def checkpoint_path(run_dir: str | Path, ckpt: str) -> Path:
    """`best`, `last`, or a path to a .ckpt file."""
    path = Path(run_dir) / "checkpoints" / f"{ckpt}.ckpt" if ckpt in ("best", "last") else Path(ckpt)
    if not path.is_file():
        raise ConfigError("ckpt", str(path), "no such checkpoint file")
    return path


def load_module(path: str | Path, map_location: str | torch.device = "cpu", key: str = "ckpt") -> LitClassifier:
    """The LightningModule stored in a checkpoint, weights loaded, in eval mode; its `loaded_from` names
    the checkpoint's epoch and step, read in the same `torch.load` as the weights.

    Raises ConfigError (naming `key` and the file) for a missing, truncated, garbage or foreign file,
    or one whose pickle would need code to run."""
    from attnlab.module import LitClassifier, checkpoint_epoch_step

    path = Path(path)
    if not path.is_file():
        raise ConfigError(key, str(path), "no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
        module = LitClassifier(**ckpt["hyper_parameters"])
        module.load_state_dict(ckpt["state_dict"])
        # From the same read as the weights: a checkpoint replaced meanwhile (a resume) cannot mislabel them.
        module.loaded_from = checkpoint_epoch_step(ckpt)
    except ConfigError:
        raise
    except Exception as e:  # truncated, garbage, a pickle with code in it, a foreign state dict, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(key, str(path), f"not a loadable attnlab checkpoint ({type(e).__name__}: {reason})") from e
    return module.eval()
