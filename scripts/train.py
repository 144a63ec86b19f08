"""Train one model, or sweep with -m.

python scripts/train.py data=halfswap model.pos_enc=sinusoidal
python scripts/train.py -m experiment=limitations
python scripts/train.py resume=outputs/runs/<run>         # continue a run from its last.ckpt, in place
"""

import contextlib
import errno
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from attnlab.config import register_configs, to_plain, validate
from attnlab.errors import ConfigError, Interrupted

register_configs()
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=<run dir>` becomes the run's own overrides (so the same config is composed), then
    the ones given now (which win, e.g. trainer.max_epochs=40), and the run's folder as output."""
    given = [a for a in argv[1:] if a.split("=", 1)[0] == "resume"]
    if not given:
        return argv
    run_dir = Path(given[-1].split("=", 1)[1])
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        print(f"error: resume={str(run_dir)!r} is invalid: not a run folder ({saved} does not exist)", file=sys.stderr)
        sys.exit(1)
    overrides: dict[str, str] = {}  # key -> override; later ones win
    for item in [*OmegaConf.load(saved), *argv[1:], f"hydra.run.dir={run_dir}"]:
        overrides[item.split("=", 1)[0].lstrip("+~")] = item
    return [argv[0], *overrides.values()]


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate(to_plain(cfg))  # a bad value answers in ~2 s, before Lightning is even imported
        from attnlab.train import train

        metrics = train(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as e:
        print(f"interrupted: {e}. Continue with: python scripts/train.py resume={out}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:
        # A failure at run time (NaN loss, out of memory, full disk, ...): the traceback goes into
        # the job's own FAILED file and one line to the terminal. In a sweep the other jobs go on;
        # the report lists this one and the multirun exits non-zero at the end.
        with contextlib.suppress(OSError):  # the disk that failed the run may not take the traceback
            (out / "FAILED").write_text(traceback.format_exc())
        if isinstance(e, OSError) and e.errno in DISK_ERRORS:
            message = f"cannot write {e.filename or out}: {e.strerror}; earlier checkpoints are intact"
        else:
            message = f"{type(e).__name__}: {e}"
        print(f"error: {message} (traceback in {out / 'FAILED'})", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return None
        sys.exit(1)
    return metrics["test/acc"]


if __name__ == "__main__":
    sys.argv = resume_argv(sys.argv)
    main()
