"""Train one model, or sweep with -m.

python scripts/train.py data=halfswap model.pos_enc=sinusoidal
python scripts/train.py -m data=uniform,halfswap model.pos_enc=none,sinusoidal
"""

import sys

import hydra
from omegaconf import DictConfig

from attnlab.config import register_configs
from attnlab.errors import ConfigError
from attnlab.train import train

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    return metrics["test/acc"]


if __name__ == "__main__":
    main()
