"""How a result is called (README: "How a verdict is reached"), stated once in `RULE`. Convergence is the rule
`early_stop.patience` stops on (Lightning's EarlyStopping, mode min; tested equal), applied to the run's val/loss
history, so a run ended by max_steps, a timer or any other callback converged only if its history shows it.
"""

import math
from collections.abc import Sequence

CHANCE = 0.5  # two classes, balanced (tasks.make_split)
LEARNED = 0.9  # a seed is "learned" when the low end of its 95% interval reaches this
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
DEFAULT_PATIENCE = 3  # validations without improvement that make a plateau when early_stop.patience is null
# "chance" needs the whole interval within CHANCE +- this: a wider one (few test sequences) cannot rule out a model
# clearly better than chance, and is called "inconclusive"
CHANCE_BAND = 0.1
MIN_N_LEARNED = math.ceil(LEARNED / (1 - LEARNED) * Z95 * Z95)  # 35: on fewer, even 100% correct cannot be "learned"

RULE = (
    f"Each seed is called from its own test accuracy and the Wilson 95% interval on the n_test sequences it scored: "
    f"`learned` when the interval's low end is at least {LEARNED:.2f} (which needs n >= {MIN_N_LEARNED}); `chance` "
    f"when the interval holds {CHANCE:.2f}, lies within {CHANCE - CHANCE_BAND:.2f}-{CHANCE + CHANCE_BAND:.2f} and the "
    "run converged (its val/loss no lower by early_stop.min_delta over its last early_stop.patience validations "
    f"(one per epoch unless the trainer says otherwise), {DEFAULT_PATIENCE} when unset: the early-stopping rule); "
    "`not converged` when it holds chance and the run was still improving; `inconclusive` when it holds chance but "
    "reaches past that band (too few test sequences to tell); `below chance` / `above chance` otherwise. "
    "A cell is `not converged` when any seed is, the seeds' verdict when they agree, and `mixed` "
    "(each verdict's seeds listed) when they do not. The uncertainty: a 95% interval misses the true accuracy one "
    "time in 20, so a seed truly at chance is called `above chance` about one time in 40 (and `below chance` as "
    "often); a study of many cells should expect a few such seeds, a cell's seeds all agreeing far fewer."
)


def epochs_without_improvement(val_loss: Sequence[float], min_delta: float) -> int:
    """EarlyStopping's wait count after these validations: the validations since the last one whose val/loss beat
    the best before it by more than `min_delta`."""
    best, wait = math.inf, 0
    for value in val_loss:
        if value < best - min_delta:
            best, wait = value, 0
        else:
            wait += 1
    return wait


def converged(val_loss: Sequence[float], patience: int | None, min_delta: float) -> bool:
    """The history ends on a plateau of `patience` validations: fewer than that cannot show one."""
    return epochs_without_improvement(val_loss, min_delta) >= (patience or DEFAULT_PATIENCE)


def wilson(acc: float, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion `acc` measured on `n` trials."""
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    p = round(acc * n) / n  # accuracies are counts / n: recover the count exactly
    denom = 1 + Z95 * Z95 / n
    centre = (p + Z95 * Z95 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 * Z95 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_verdict(acc: float, n: int, is_converged: bool) -> str:
    lo, hi = wilson(acc, n)
    if lo >= LEARNED:
        return "learned"
    if lo <= CHANCE <= hi:
        if not is_converged:
            return "not converged"
        return "chance" if lo >= CHANCE - CHANCE_BAND and hi <= CHANCE + CHANCE_BAND else "inconclusive"
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
