"""Train one model, or sweep with -m.

python scripts/train.py data=halfswap model.pos_enc=sinusoidal
python scripts/train.py -m experiment=limitations
"""

import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
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
    except Exception:
        # Record the failure in the job's own folder. In a sweep, carry on with the other jobs:
        # the report lists this one and the multirun exits non-zero at the end.
        out = Path(HydraConfig.get().runtime.output_dir)
        (out / "FAILED").write_text(traceback.format_exc())
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            print(f"[attnlab] job failed, traceback in {out / 'FAILED'}", file=sys.stderr)
            return None
        raise
    return metrics["test/acc"]


if __name__ == "__main__":
    main()
