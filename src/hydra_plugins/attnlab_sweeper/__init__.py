"""`hydra/sweeper=attnlab` (the default of conf/train.yaml): Hydra's basic sweeper, plus
attnlab's value checks on every job before the first one runs.

Hydra already composes every job's config before launching (so a typo fails early); this also
runs `config.validate` on each, so `-m data.seq_len=32,33 data=halfswap` stops at once, with the
offending job named, instead of failing in the middle of the sweep. (Hydra loads sweepers only
from the `hydra_plugins` namespace package, hence this folder. No `from __future__ import
annotations` here: Hydra imports plugins in a way that breaks string annotations on dataclasses.)
"""

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from omegaconf import open_dict

from attnlab.config import to_plain, validate
from attnlab.console import SWEEP_SIZE_ENV
from attnlab.errors import ConfigError


@dataclass
class ValidatingSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.attnlab_sweeper.ValidatingSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="attnlab", node=ValidatingSweeperConf, provider="attnlab")


class ValidatingSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.hydra_context is not None and self.config is not None
        # Jobs print "job 3/30"; launchers' workers (joblib, submitit) inherit the environment.
        os.environ[SWEEP_SIZE_ENV] = str(sum(len(b) for b in self.overrides))
        for num, overrides in enumerate(batch):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                del cfg["hydra"]
                cfg.output_dir = "."  # an interpolation into the job's runtime, which does not exist yet
            try:
                validate(to_plain(cfg))
            except ConfigError as e:
                print(f"error: job #{num} ({' '.join(overrides)}): {e}", file=sys.stderr)
                sys.exit(1)
