"""Score a trained run on other sequence lengths.

python scripts/evaluate.py run_dir=outputs/runs/<run> eval.seq_lens=[16,32,64,128]
python scripts/evaluate.py run_dir=outputs/multiruns/<sweep>/data=halfswap,pos_enc=rope,seed=0   # as printed
"""

import atexit
import gc
import os
import sys
from pathlib import Path

from attnlab.errors import ConfigError, one_line, outlive_readers, stop_on_signals

stop_on_signals("evaluation.json and the figure are each whole, the old or the new; run it again to score the lengths")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from attnlab.board import EVENTS  # noqa: E402
from attnlab.config import register_configs  # noqa: E402
from attnlab.evaluate import EVALUATION, FIGURE, evaluate_run  # noqa: E402
from attnlab.naming import quote_paths  # noqa: E402

atexit.register(gc.freeze)  # a quicker exit: scripts/train.py says why
outlive_readers()  # `| head`: evaluation.json is written either way

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    eval_cfg = OmegaConf.to_container(cfg.eval, resolve=True)
    try:
        if OmegaConf.is_missing(cfg, "run_dir"):
            raise ConfigError("run_dir", "???", "must be set: run_dir=<a run folder, as train.py printed it>")
        entry = evaluate_run(cfg.run_dir, eval_cfg, eval_cfg.pop("ckpt"))
    except ConfigError as err:
        sys.exit(f"error: {err}")
    ckpt = entry["checkpoint"]
    print(f"{ckpt['file']} (epoch {ckpt['epoch']}, step {ckpt['global_step']}), {entry['n']} sequences per length")
    print(f"{'seq_len':>8}  test/acc  95% CI")
    for length in map(str, eval_cfg["seq_lens"]):
        result = entry["lengths"][length]
        if "refused" in result:  # (eval.untrained=skip: recorded as not scored)
            print(f"{length:>8}  -         not scored: {result['refused']}")
        else:
            mark = "  untrained positions" if result["untrained_positions"] else ""
            print(f"{length:>8}  {result['acc']:.4f}    [{result['ci'][0]:.3f}, {result['ci'][1]:.3f}]{mark}")
    images = " and its TensorBoard images" if any(Path(cfg.run_dir).glob(EVENTS)) else ""
    print(f"written to {cfg.run_dir}/{EVALUATION}, {cfg.run_dir}/{FIGURE}{images}")


if __name__ == "__main__":
    sys.argv = quote_paths(sys.argv, ("run_dir", "eval.ckpt"))  # paths as printed: a job folder has = and ,
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's own errors reach here whole, to be said in one line
    try:
        main()
    except Exception as e:  # composing (an unknown option, a wrong type), resolving Hydra's settings: one line
        sys.exit(f"error: {one_line(e)}")
