"""Train one model, or sweep with -m.

python scripts/train.py data=halfswap model.pos_enc=sinusoidal
python scripts/train.py -m experiment=limitations
python scripts/train.py resume=outputs/runs/<run>            # continue a run from its newest checkpoint, in place
python scripts/train.py -m resume=outputs/multiruns/<sweep>  # continue a sweep: the jobs that did not finish
"""

import atexit
import gc
import os
import signal
import sys
from pathlib import Path


def stopped_early(signum: int, frame: object) -> None:
    """SIGTERM / SIGINT before the run's own handling: one line, exit 128 + signal, a claimed folder marked."""
    # attnlab.run_folder not imported yet, or still being imported: no folder is held
    module = sys.modules.get("attnlab.run_folder")
    held = module.held() if hasattr(module, "held") else []
    # ... and a folder claimed but not yet written by Hydra holds nothing to resume either
    held = [f for f in held if (f / ".hydra").exists() or (f / "multirun.yaml").exists()]
    for folder in held:
        module.write_marker(folder, module.INTERRUPTED, f"signal {signum} during start-up\n")
    if held:
        then = f". Continue with: {module.continue_command(held[0], '-m' in sys.argv or '--multirun' in sys.argv)}"
    else:
        then = ", before anything was written: nothing to resume"
    print(f"interrupted ({signal.Signals(signum).name}) during start-up{then}", file=sys.stderr)
    sys.exit(128 + signum)


# First, before the imports (seconds of them): from here on no signal leaves a traceback or a silent exit.
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, stopped_early)
# At exit Python's last collections walk every object torch, Lightning and Hydra made: 1.3 s (docs/performance.md).
# Frozen after the exit handlers, they are skipped.
atexit.register(gc.freeze)
# A reader that leaves (`| head`) must not fail the run: what it would have read goes to /dev/null.
from attnlab.errors import outlive_readers  # noqa: E402

outlive_readers()


import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from attnlab import run_folder  # noqa: E402
from attnlab.config import check_yaml_files, register_configs  # noqa: E402
from attnlab.errors import ConfigError, Interrupted, one_line, run_failure  # noqa: E402
from attnlab.naming import quote_paths  # noqa: E402
from attnlab.resume import check_rerun_config, resume_argv  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    from attnlab.train import train  # after the checks: a bad value answers before Lightning is imported

    # Validated already: a single run by resume.preflight, a sweep's jobs by the attnlab sweeper, up front.
    checked = not in_sweep or "attnlab_sweeper" in str(HydraConfig.get().sweeper.get("_target_", ""))

    try:
        metrics = train(cfg, checked=checked)
    except Interrupted as e:
        if in_sweep:  # stops the sweep; the sweeper writes the report and prints how to continue
            print(f"[attnlab] interrupted: {e} ({run_dir})", file=sys.stderr, flush=True)
            raise
        print(f"interrupted: {e}. Continue with: {run_folder.continue_command(run_dir, sweep=False)}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:
        # NaN loss, out of memory, full disk: one line, the traceback in FAILED; a sweep's other jobs go on.
        print(f"error: {run_failure(e, run_dir, run_dir / run_folder.FAILED)}", file=sys.stderr, flush=True)
        if in_sweep:
            return None
        sys.exit(1)
    return metrics["test/acc"]


if __name__ == "__main__":
    try:  # a hand-edited group file with a typo: one line naming the place, not Hydra's traceback
        check_yaml_files(Path(__file__).resolve().parent.parent / "conf")
        check_rerun_config(sys.argv)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    sys.argv = resume_argv(quote_paths(sys.argv, ("ckpt_path",)))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's own errors reach here whole, to be said in one line
    try:
        main()
    except Exception as e:  # composing (an unknown option, a wrong type), resolving Hydra's settings: one line
        sys.exit(f"error: {one_line(e)}")
