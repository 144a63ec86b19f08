"""Train one model, or sweep with -m.

python scripts/train.py data=halfswap model.pos_enc=sinusoidal
python scripts/train.py -m experiment=limitations
python scripts/train.py resume=outputs/runs/<run>            # continue a run from its newest checkpoint, in place
python scripts/train.py -m resume=outputs/multiruns/<sweep>  # continue a sweep: the jobs that did not finish
"""

import signal
import sys
from pathlib import Path


def stopped_early(signum: int, frame: object) -> None:
    """SIGTERM / SIGINT before the run's own handling starts (imports, composing, claiming the folder): one
    line and exit 128 + signal, no traceback. A folder already claimed is marked INTERRUPTED and the command
    that continues it printed; before that nothing was written, and there is nothing to resume."""
    # attnlab.runs not imported yet, or still being imported (the signal came during it): no folder is held
    held_folders = getattr(sys.modules.get("attnlab.runs"), "held", None)
    # ... and a folder claimed but not yet written by Hydra holds nothing to resume either
    held = (
        [f for f in held_folders() if (f / ".hydra").exists() or (f / "multirun.yaml").exists()] if held_folders else []
    )
    for folder in held:
        runs_module = sys.modules["attnlab.runs"]  # held folders: imported
        runs_module.write_marker(folder, runs_module.INTERRUPTED, f"signal {signum} during start-up\n")
    name = signal.Signals(signum).name
    if held:
        sweep = "-m" in sys.argv or "--multirun" in sys.argv
        print(
            f"interrupted ({name}) during start-up. Continue with: {continue_command(held[0], sweep)}",
            file=sys.stderr,
        )
    else:
        print(f"interrupted ({name}) during start-up, before anything was written: nothing to resume", file=sys.stderr)
    sys.exit(128 + signum)


# First, before the imports (seconds of them): from here on no signal leaves a traceback or a silent exit.
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, stopped_early)

import errno  # noqa: E402
import shlex  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from attnlab import runs  # noqa: E402
from attnlab.config import check_yaml_files, register_configs  # noqa: E402
from attnlab.errors import ConfigError, Interrupted  # noqa: E402
from attnlab.naming import hydra_quote  # noqa: E402

register_configs()
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# Hydra settings a continued sweep takes over from the original (how its jobs were launched).
SWEEP_HYDRA_KEYS = ("hydra/launcher", "hydra.launcher.", "hydra.verbose")


def continue_command(folder: Path, sweep: bool) -> str:
    return f"python scripts/train.py {'-m ' if sweep else ''}resume={shlex.quote(str(folder))}"


def saved_overrides(folder: Path, sweep: bool) -> list[str]:
    """What the run (its .hydra/overrides.yaml) or sweep (multirun.yaml) was started with, checked:
    a folder is input like any other, and its overrides may set only the project's own keys."""
    record = folder / ("multirun.yaml" if sweep else ".hydra/overrides.yaml")
    if not record.is_file():
        what = "sweep folder" if sweep else "run folder"
        raise ConfigError("resume", str(folder), f"not a {what} ({record} does not exist)")
    try:
        # As written: unresolved, so that an interpolation in a record is seen (and refused), never run.
        saved = OmegaConf.to_container(OmegaConf.load(record), resolve=False)
        task = list(saved["hydra"]["overrides"]["task"] if sweep else saved)
        launch = list(saved["hydra"]["overrides"]["hydra"]) if sweep else []
    except Exception as e:
        raise ConfigError("resume", str(folder), f"{record} is unreadable ({type(e).__name__})") from e
    kept = []
    for item in [*task, *launch]:
        if not isinstance(item, str):
            raise ConfigError("resume", str(record), f"refusing its saved override {item!r}: not an override")
    for item in task:
        if item.split("=", 1)[0] != "resume":  # this resume sets its own
            runs.check_saved_override(item, record)
            kept.append(item)
    for item in launch:
        key = item.split("=", 1)[0]
        if key in ("hydra.sweep.dir", "hydra.mode"):  # set again by this resume and by -m
            continue
        if not key.startswith(SWEEP_HYDRA_KEYS):
            raise ConfigError("resume", str(record), f"refusing its saved override {item!r}: not a launcher setting")
        runs.check_saved_launcher(item, record)
        kept.append(item)
    return kept


def resume_argv(argv: list[str]) -> list[str]:
    """`resume=<folder>` becomes the folder's own overrides (so the same config is composed), then the
    ones given now (which win, e.g. trainer.max_epochs=40), `resume=true` and the folder as output.
    Done before Hydra parses anything: a sweep job's folder name (`data=halfswap,seed=1`) is no
    valid override value, so it reaches Hydra quoted."""
    given = [a for a in argv[1:] if a.split("=", 1)[0] == "resume"]
    if not given:
        return argv
    sweep = "-m" in argv or "--multirun" in argv
    folder = Path(given[-1].split("=", 1)[1])
    try:
        saved = saved_overrides(folder, sweep)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    flags = [a for a in argv[1:] if a.startswith("-")]
    now = [a for a in argv[1:] if not a.startswith("-") and a.split("=", 1)[0] != "resume"]
    where = f"hydra.{'sweep' if sweep else 'run'}.dir={hydra_quote(str(folder))}"
    overrides: dict[str, str] = {}  # key -> override; later ones win
    for item in [*saved, *now, "resume=true", where]:
        overrides[item.split("=", 1)[0].lstrip("+~")] = item
    return [argv[0], *flags, *overrides.values()]


def describe(e: Exception, out: Path) -> str:
    """One line for a run-time failure; the traceback is in the run's FAILED file."""
    if isinstance(e, ConfigError):
        return str(e)
    if isinstance(e, OSError) and e.errno in DISK_ERRORS:
        # the file being written, not the temporary one it goes through (attnlab writes <name>.tmp, then renames)
        name = str(e.filename).removesuffix(".tmp") if e.filename else out
        return f"cannot write {name}: {e.strerror}; earlier checkpoints are intact"
    return f"{type(e).__name__}: {e} (traceback in {out / runs.FAILED})"


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    out = Path(HydraConfig.get().runtime.output_dir)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    from attnlab.train import train  # after the checks: a bad value answers before Lightning is imported

    # Validated already: a single run by runs.preflight, a sweep's jobs by the attnlab sweeper, up front.
    checked = not in_sweep or "attnlab_sweeper" in str(HydraConfig.get().sweeper.get("_target_", ""))

    try:
        metrics = train(cfg, checked=checked)
    except Interrupted as e:
        if in_sweep:  # stops the sweep; the sweeper writes the report and prints how to continue
            print(f"[attnlab] interrupted: {e} ({out})", file=sys.stderr, flush=True)
            raise
        print(f"interrupted: {e}. Continue with: {continue_command(out, sweep=False)}", file=sys.stderr)
        sys.exit(e.exit_code)
    except Exception as e:
        # A failure at run time (NaN loss, out of memory, full disk, ...): one line here, the traceback
        # in the run's FAILED file. In a sweep the other jobs go on and the sweep exits non-zero.
        print(f"error: {describe(e, out)}", file=sys.stderr, flush=True)
        if in_sweep:
            return None
        sys.exit(1)
    return metrics["test/acc"]


if __name__ == "__main__":
    try:  # a hand-edited group file with a typo: one line naming the place, not Hydra's traceback
        check_yaml_files(Path(__file__).resolve().parent.parent / "conf")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    sys.argv = resume_argv(sys.argv)
    main()
