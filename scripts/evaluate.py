"""Score a trained run on other sequence lengths.

python scripts/evaluate.py run_dir=outputs/runs/<run> eval.seq_lens=[16,32,64,128]
"""

import sys

import hydra
from omegaconf import DictConfig

from attnlab.config import register_configs
from attnlab.errors import ConfigError
from attnlab.evaluate import evaluate_lengths

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    e = cfg.eval
    try:
        results = evaluate_lengths(cfg.run_dir, list(e.seq_lens), e.ckpt, e.n, e.batch_size)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"{'seq_len':>8}  test/acc")
    for length, acc in results.items():
        print(f"{length:>8}  {acc:.4f}")
    print(f"written to {cfg.run_dir}/metrics.json, {cfg.run_dir}/length_generalization.png and its TensorBoard images")


if __name__ == "__main__":
    main()
