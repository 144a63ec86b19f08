"""Checkpoints: read safely (`torch.load(weights_only=True)`: a crafted pickle is refused without running; a
failure to read is a ConfigError naming the file), written atomically (`AtomicCheckpointIO`: a kill or a full
disk leaves the previous one whole), and kept right when a run folder moves (`RunCheckpoint`).
"""

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from attnlab.errors import ConfigError, first_line
from attnlab.run_folder import CHECKPOINTS, replacing

TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def read_checkpoint(path: str | Path, key: str) -> dict[str, Any]:
    """ConfigError for a missing, truncated, garbage or foreign file, or a pickle that would need code to run."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(key, str(path), "no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        dict(ckpt["state_dict"])
        if not all(isinstance(ckpt.get(part, {}), dict) for part in ("loops", "callbacks")):
            raise ValueError("its loops and callbacks must be mappings")
        if not all(type(ckpt[name]) is int and ckpt[name] >= 0 for name in ("epoch", "global_step")):
            raise ValueError("its epoch and global_step must be whole numbers >= 0")
        if not (isinstance(hp := ckpt["hyper_parameters"], dict) and isinstance(hp.get("model"), dict) and plain(hp)):
            raise ValueError("its hyper_parameters must be plain values, with the model's settings")
    except Exception as e:
        reason = f"{type(e).__name__}: {first_line(e)}"
        if isinstance(e, pickle.UnpicklingError):  # PyTorch's own text advises weights_only=False: its detail only
            detail = [line for line in str(e).splitlines() if line.strip() and not line.startswith(TORCH_ADVICE)]
            reason = f"refused by torch.load(weights_only=True): {detail[0] if detail else first_line(e)}"
        raise ConfigError(key, str(path), f"not a loadable attnlab checkpoint ({reason})") from e
    return ckpt


def plain(value: Any, seen: set[int] | None = None) -> bool:
    """Only what a config holds: numbers, strings, None, and lists and dicts of them (no tensors), as a tree: a
    container met twice (a pickle's shared reference) is refused, not walked again: sharing multiplies the walk."""
    seen = set() if seen is None else seen
    if isinstance(value, dict | list | tuple) and value:
        if id(value) in seen:
            return False
        seen.add(id(value))
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v, seen) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(plain(v, seen) for v in value)
    return value is None or type(value) in (bool, int, float, str)


def epoch_step(ckpt: dict[str, Any]) -> dict[str, int]:
    """{"epoch", "global_step"}, epochs from 1 as the console counts them (Lightning's `epoch` is from 0)."""
    return {"epoch": int(ckpt["epoch"]) + 1, "global_step": int(ckpt["global_step"])}


def newest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The loadable checkpoint with the most steps and its contents; one that does not load is skipped, never
    trusted, and a folder of only such files is refused."""
    found, unloadable = [], []
    for name in CHECKPOINTS:
        path = folder / "checkpoints" / f"{name}.ckpt"
        if path.is_file():
            try:
                found.append((path, read_checkpoint(path, "resume")))
            except ConfigError:
                unloadable.append(path.name)
    if not found and unloadable:  # (writes are atomic: a kill leaves <name>.<random>.tmp, never a cut .ckpt)
        why = f"holds checkpoints none of which loads ({', '.join(unloadable)}): refusing to train over them; "
        raise ConfigError("resume", str(folder), why + "move them away to start the run again")
    return max(found, key=lambda f: int(f[1]["global_step"])) if found else None  # a tie: CHECKPOINTS order


def catch_up_last(newest: Path) -> None:
    """An epoch's end writes best.ckpt, then last.ckpt: a kill between the two leaves last.ckpt an epoch behind,
    and a resume with nothing left to train would never write it. Only then is best.ckpt the newest (a tie goes
    to last.ckpt): it is copied over last.ckpt."""
    if newest.name == "best.ckpt":
        with replacing(newest.with_name("last.ckpt")) as tmp:
            shutil.copyfile(newest, tmp)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """torch.save straight to the file (a run folder is local: Lightning's own goes through fsspec and a copy in
        memory, ~15% of a save)."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:
            torch.save(checkpoint, tmp)


PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def check_callback_paths(ckpt: dict[str, Any], key: str, path: Path) -> None:
    """A checkpoint's ModelCheckpoint states may name only a run's own checkpoint files, by name: Lightning deletes
    and tests the files they name (a crafted `checkpoints/../../x` would be deleted, an outside file tested)."""
    for state in ckpt.get("callbacks", {}).values():
        if not isinstance(state, dict) or "best_model_path" not in state:
            continue
        named = [state.get(k) for k in PATH_KEYS] + list(state.get("best_k_models") or {})
        if bad := [name for name in named if name and own_name(name) is None]:
            raise ConfigError(key, str(path), f"its checkpoint state names {bad[0]!r}, not one of this run's files")


def own_name(path: Any) -> str | None:
    """`<name>.ckpt` of a path naming one of a run's checkpoints (CHECKPOINTS), else None."""
    name = os.path.basename(path) if isinstance(path, str) else None
    return name if name in {f"{n}.ckpt" for n in CHECKPOINTS} and ".." not in Path(path).parts else None


class RunCheckpoint(ModelCheckpoint):
    """The saved state follows the run into this folder: ModelCheckpoint forgets its best score when resumed in
    another folder than it was saved from (a run moved or copied), and best.ckpt would be overwritten by a worse
    epoch. Each path is re-based to this folder by its name, one of a run's checkpoints (`check_callback_paths`
    refused others up front). (A new run from another's checkpoint gets no callback state:
    `LitClassifier.on_load_checkpoint`.)"""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        def here(path: Any) -> str:
            name = own_name(path)
            return os.path.join(self.dirpath, name) if name and self.dirpath else ""

        moved = {k: here(state_dict.get(k, "")) for k in PATH_KEYS}
        moved["best_k_models"] = {here(k): v for k, v in state_dict.get("best_k_models", {}).items() if own_name(k)}
        return super().load_state_dict({**state_dict, "dirpath": self.dirpath, **moved})
