"""How a result is called: convergence, a confidence interval per seed, a verdict per seed and per cell.

The rules, stated once (the report's summary prints the same text, `RULE`):

- **Converged**: the run's validation loss had stopped improving when training ended: over its last
  `patience` epochs no val/loss was lower than the best before it by more than `min_delta`. This is
  exactly the rule `early_stop.patience` stops on (Lightning's EarlyStopping, mode min; tested equal),
  applied to the run's per-epoch history, so a run ended by max_steps, a timer or any other callback
  is converged only if its history shows the plateau. Without `early_stop.patience` the plateau is
  judged over `DEFAULT_PATIENCE` epochs.
- **A seed** is called from its own test accuracy `acc` on `n` test sequences and the Wilson 95%
  interval [lo, hi] of that proportion: `learned` when lo >= `LEARNED`; `chance` when the interval
  holds chance (0.5) and the run converged, `not converged` when it holds chance and the run had
  not; `below chance` when hi < 0.5; `above chance` otherwise.
- **A cell** (one setting, several seeds): `not converged` when any seed is; the seeds' verdict when
  they all agree; otherwise `mixed`, with the seeds of each verdict listed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NUM_CLASSES = 2
CHANCE = 1 / NUM_CLASSES  # classes are balanced (tasks.make_split)
LEARNED = 0.9  # a seed is "learned" when the low end of its 95% interval reaches this
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
DEFAULT_PATIENCE = 3  # epochs of no improvement that make a plateau when early_stop.patience is null

RULE = (
    f"Each seed is called from its own test accuracy and the Wilson 95% interval on its n_test sequences: "
    f"`learned` when the interval's low end is at least {LEARNED:.2f}; `chance` when the interval holds "
    f"{CHANCE:.2f} and the run converged (its val/loss no lower by early_stop.min_delta over its last "
    f"early_stop.patience epochs, {DEFAULT_PATIENCE} when unset: the early-stopping rule), `not converged` "
    "when it holds chance and the run was still improving; `below chance` / `above chance` otherwise. "
    "A cell is `not converged` when any seed is, the seeds' verdict when they agree, and `mixed` "
    "(each verdict's seeds listed) when they do not."
)


def epochs_without_improvement(val_loss: Sequence[float], min_delta: float) -> int:
    """Lightning's EarlyStopping wait count (monitor val/loss, mode min) after these epochs: the epochs
    since the last one whose val/loss beat the best before it by more than `min_delta`."""
    best, wait = math.inf, 0
    for value in val_loss:
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
    return wait


def converged(val_loss: Sequence[float], patience: int | None, min_delta: float) -> bool:
    """The val/loss history ends on a plateau of `patience` epochs (DEFAULT_PATIENCE when None): the rule
    `early_stop` stops on. Fewer epochs than that cannot show a plateau."""
    return epochs_without_improvement(val_loss, min_delta) >= (patience or DEFAULT_PATIENCE)


def wilson(acc: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `acc` measured on `n` trials (95% by default)."""
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    k = round(acc * n)  # accuracies are counts / n: recover the count exactly
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_verdict(acc: float, n: int, is_converged: bool) -> str:
    lo, hi = wilson(acc, n)
    if lo >= LEARNED:
        return "learned"
    if lo <= CHANCE <= hi:
        return "chance" if is_converged else "not converged"
    return "below chance" if hi < CHANCE else "above chance"


def cell_verdict(seeds: Sequence[tuple[object, str]]) -> str:
    """(seed, seed verdict) pairs -> the cell's verdict."""
    verdicts = [v for _, v in seeds]
    if not verdicts:
        return "–"
    if "not converged" in verdicts:
        return "not converged"
    if len(set(verdicts)) == 1:
        return verdicts[0]
    groups = {v: [str(s) for s, w in seeds if w == v] for v in dict.fromkeys(verdicts)}
    return "mixed (" + "; ".join(f"{v}: seed {', '.join(s)}" for v, s in groups.items()) + ")"


def interval_text(acc: float, n: int) -> str:
    lo, hi = wilson(acc, n)
    return f"{acc:.3f} [{lo:.3f}, {hi:.3f}]"
