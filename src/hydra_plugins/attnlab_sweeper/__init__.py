"""`hydra/sweeper=attnlab` (conf/train.yaml's default): a grid sweep that loses nothing.

Every job's config is checked before any job runs (`config.validate`, `resume.plan`; two jobs sharing a folder
or a config are refused) and recorded (`sweep_record`). A failed job leaves `FAILED` and the others go on; a
signal stops the sweep once the running jobs have saved; however it ended, the report is written and the exit
code says how (`report.conclude`). `-m resume=<sweep dir>` continues a sweep, keeping its finished jobs.

The grid is Hydra's basic sweeper's (`hydra.sweeper.params`, then the command line; a later value of a key wins).
Hydra imports sweepers in a way that breaks string annotations on dataclasses: no `from __future__ import`.
"""

import copy
import itertools
import pickle
import re
import signal
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from attnlab import errors, resume, run_folder, sweep_record
from attnlab.config import check_overrides, to_plain, validate
from attnlab.errors import ConfigError, Interrupted, one_line, printable
from attnlab.naming import canonical, flatten, hydra_quote, job_names, lookup

# The module, not its class: Hydra's plugin scan runs each plugin module again after this import, and
# instantiates the launcher from the class that run made.
from hydra_plugins.attnlab_sweeper import launcher as processes


@dataclass
class AttnlabSweeperConf:
    _target_: str = "hydra_plugins.attnlab_sweeper.AttnlabSweeper"
    params: dict[str, str] | None = None  # the grid, key -> values (`a,b`, `range(...)`), as the basic sweeper's


ConfigStore.instance().store(group="hydra/sweeper", name="attnlab", node=AttnlabSweeperConf, provider="attnlab")


def grid(parser: OverridesParser, arguments: list[str]) -> list[list[str]]:
    """Every combination of the swept values, each job a list of `key=value` overrides."""
    choices: dict[str, list[str]] = {}  # key -> its values; a later override of a key replaces the earlier
    for override in parser.parse_overrides(arguments):
        key, sweep = override.get_key_element(), override.is_sweep_override()
        if sweep and not override.is_discrete_sweep():
            raise ConfigError(key, override.input_line, "an interval sweep needs a sweeper that samples it")
        values = override.sweep_string_iterator() if sweep else [override.get_value_element_as_str()]
        choices[key] = [f"{key}={value}" for value in values]
    return [list(job) for job in itertools.product(*choices.values())]


class JobConfigs:
    """Each job's plain config as Hydra composes it, 1,000 jobs in about a second: Hydra composes once per
    choice of config groups (`data=halfswap`); each job's values (`seed=3`) are set on a plain copy, each distinct
    value converted once on a probe, as Hydra sets a command line's. Values that could resolve differently
    (lists, mappings, interpolations, keys an interpolation reads) are set on a copy of the composition; a `~key`,
    a `++key` or a folder named by Hydra's own interpolation is composed whole."""

    def __init__(self, loader: Any, config: DictConfig) -> None:
        self.loader, self.config = loader, config
        self.overrides = processes.Overrides(loader)
        self.composed: dict[tuple[str, ...], Composition] = {}

    def compose(self, overrides: list[str], folder: str | None, output_dir: str = "") -> tuple[dict[str, Any], str]:
        """The job's plain config, and its folder: `folder`, or else its resolved hydra.sweep.subdir."""
        _, groups, values = self.overrides.split(overrides)
        if folder is None or any(o.is_delete() or o.is_force_add() or o.package is not None for o in values):
            cfg = self.loader.load_sweep_config(self.config, list(overrides))
            folder = folder or str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
            return to_plain(cfg, output_dir), folder
        if groups not in self.composed:
            self.composed[groups] = Composition(self.loader.load_sweep_config(self.config, list(groups)))
        return self.composed[groups].job(values, output_dir), folder


class Composition:
    """One composition of the config groups, and the jobs' values set on it."""

    def __init__(self, cfg: DictConfig) -> None:
        with open_dict(cfg):
            del cfg["hydra"]  # the task's part only: Hydra's own node is 4x its size
        self.cfg = cfg
        written = flatten(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
        # the keys its interpolations read: `data.dim` in `model.dim: ${data.dim}`
        self.references = {ref for v in written.values() if isinstance(v, str) for ref in INTERPOLATION.findall(v)}
        try:
            self.plain: dict[str, Any] | None = to_plain(cfg, "")
        except ConfigError:  # a `???` every job sets, say
            self.plain = None
        self.probe = copy.deepcopy(cfg)
        self.values: dict[str, Any] = {}  # override -> the plain value it sets (an enum as its name)

    def job(self, values: list[Any], output_dir: str) -> dict[str, Any]:
        for override in values:  # Hydra's rule: `+key` adds a key; over a value that is set, it is refused
            key, value = override.key_or_group, override.value()
            if override.is_add() and not isinstance(value, list | dict) and OmegaConf.select(self.cfg, key) is not None:
                why = f"{key} is set already: {key}=... overrides it (++{key}=... adds or overrides)"
                raise ConfigError(f"+{key}", value, why)
        if self.plain is not None and all(self.plain_value_fits(o) for o in values):
            cfg = pickle.loads(pickle.dumps(self.plain))  # (deepcopy's bookkeeping: a third of a big grid's checks)
            for override in values:
                parent, _, name = override.key_or_group.rpartition(".")
                (lookup(cfg, parent) if parent else cfg)[name] = self.value(override)
            cfg["output_dir"] = output_dir
            return cfg
        job = copy.deepcopy(self.cfg)  # Hydra's node already left out: set in place, not copied again
        for override in values:
            set_value(job, override)
        with open_dict(job):
            job.output_dir = ""  # set after resolving (to_plain)
        return {**to_plain(job), "output_dir": output_dir}

    def plain_value_fits(self, override: Any) -> bool:
        """A single plain value, of a key no interpolation reads, in a section the composition has."""
        key, value = override.key_or_group, override.value()
        if isinstance(value, list | dict) or (isinstance(value, str) and "${" in value):
            return False
        parent = key.rpartition(".")[0]
        if parent and not isinstance(lookup(self.plain, parent), dict):  # type: ignore[arg-type]
            return False
        return not any(ref == key or ref.startswith(f"{key}.") or key.startswith(f"{ref}.") for ref in self.references)

    def value(self, override: Any) -> Any:
        """The plain value `override` sets (an enum as its name), set once on the probe as Hydra sets it."""
        if override.input_line not in self.values:
            set_value(self.probe, override)
            value = OmegaConf.select(self.probe, override.key_or_group)
            self.values[override.input_line] = value.name if isinstance(value, Enum) else value
        return self.values[override.input_line]


INTERPOLATION = re.compile(r"\$\{\s*([^}:\s]*)\s*\}")  # ${data.dim}; a resolver's ${name:...} reads no task key


def set_value(cfg: DictConfig, override: Any) -> None:
    """A job's `key=value`, set as Hydra sets a command line's; ConfigError where it does not fit."""
    key = override.key_or_group
    try:
        OmegaConf.update(cfg, key, override.value(), merge=True, force_add=override.is_add())
    except Exception as e:  # an unknown key, a value of the wrong type: the sweep is refused
        raise ConfigError(key, override.get_value_element_as_str(), str(e).splitlines()[0]) from e


def finished(job_dir: Path) -> bool:
    return run_folder.status(job_dir)[0] == "ok"


class AttnlabSweeper(Sweeper):
    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = params or {}

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.resuming = bool(config.get("resume"))
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context, task_function, config)
        self.forks = isinstance(self.launcher, processes.ProcessesLauncher)  # its workers start while jobs are checked

    def sweep(self, arguments: list[str]) -> None:
        began = time.perf_counter()
        try:
            sweep_dir, jobs, folders = self.check(arguments)
            code = self.run_jobs(sweep_dir, jobs, folders, began)
        finally:  # however it ends (a refusal after the workers started, a signal): nothing is left running
            if self.forks:
                self.launcher.stop(kill=True)
        run_folder.release(sweep_dir)
        if code:
            sys.exit(code)

    def check(self, arguments: list[str]) -> tuple[Path, list[list[str]], list[str]]:
        """The sweep's folder, claimed, its jobs and their folders (`job_names`, or the command line's
        hydra.sweep.subdir), once every job's config passed; a bad job ends the sweep before any job runs, named."""
        given = {o.split("=", 1)[0] for o in self.config.hydra.overrides.hydra}  # the hydra keys the command line set
        own_subdir = "hydra.sweep.subdir" in given
        composer = JobConfigs(self.hydra_context.config_loader, self.config)
        refused = ""  # the job a refusal names
        try:
            sweep_dir = Path(str(self.config.hydra.sweep.dir))  # (an interpolation that does not resolve: refused)
            run_folder.check_name(sweep_dir, "hydra.sweep.dir")
            if self.forks:
                self.launcher.check()
            jobs = grid(composer.overrides.parser, [*(f"{k}={v}" for k, v in self.params.items()), *arguments])
            names = job_names(jobs)
            if self.resuming:  # a sweep keeps its jobs' folders, whatever names this version would give them
                run_folder.check_no_links_out(sweep_dir, "resume", depth=0)
                names = sweep_record.recorded_folders(sweep_dir, jobs, names)
            # workers for the jobs left: a continued sweep's finished jobs are kept (own subdirs: not known yet)
            left = len(jobs) if own_subdir or not self.resuming else sum(not finished(sweep_dir / n) for n in names)
            folders: dict[str, int] = {}
            configs: dict[str, int] = {}  # each job's resolved config: two jobs of one config would count twice
            for num, (overrides, name) in enumerate(zip(jobs, names, strict=True)):
                refused = f"job {num + 1} ({' '.join(overrides)}): "  # counted from 1, as the console counts
                check_overrides(overrides)
                cfg, folder = composer.compose(overrides, None if own_subdir else name)
                cfg["output_dir"] = str(sweep_dir / folder)
                run_folder.check_name(folder, "hydra.sweep.subdir")
                validate(cfg)
                if folder in folders:  # (`seed=0,0`: both jobs named by what varies: nothing)
                    why = f"job {folders[folder] + 1} has the same overrides and folder: a value given twice"
                    raise ConfigError("hydra.sweep.subdir", folder, why)
                same = canonical({k: v for k, v in cfg.items() if k != "output_dir"})
                if same in configs:
                    why = f"job {configs[same] + 1} has the same config: a seed or cell twice"
                    raise ConfigError("hydra.sweep.subdir", folder, why)
                start = resume.plan(cfg, sweep_dir / folder, recorded=True)
                if not (self.resuming and finished(sweep_dir / folder)):  # (a finished job is kept as it is)
                    start.check_trains()
                folders[folder], configs[same] = num, num
                if num == 0 and self.forks:  # once the first job passed: a bad value for them all is said at once
                    self.launcher.start(left)
            refused = ""
            if self.resuming:  # the folders the jobs run in (own subdirs: as composed)
                sweep_record.check_same_jobs(sweep_dir, list(folders))
            if not own_subdir:
                jobs = [[*job, f"hydra.sweep.subdir={hydra_quote(n)}"] for job, n in zip(jobs, names, strict=True)]
            explicit = "hydra.sweep.dir" in given
            claimed = run_folder.claim(sweep_dir, "hydra.sweep.dir", explicit, self.resuming, marker="multirun.yaml")
        except Exception as e:  # a refusal, or a crafted record past the checks: one line all the same
            # said before `sweep`'s finally stops the workers
            print(f"error: {printable(refused)}{one_line(e)}", file=sys.stderr, flush=True)
            sys.exit(1)
        if claimed != sweep_dir:  # taken: a suffixed name. Jobs' configs are recomposed from the hydra overrides.
            with read_write(self.config.hydra):
                self.config.hydra.sweep.dir = str(claimed)
                self.config.hydra.overrides.hydra.append(f"hydra.sweep.dir={hydra_quote(str(claimed))}")
        return claimed, jobs, list(folders)

    def run_jobs(self, sweep_dir: Path, jobs: list[list[str]], folders: list[str], began: float) -> int:
        self.deferred = 0
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if not (sweep_dir / "multirun.yaml").exists():  # a continued sweep keeps its original record
                with run_folder.replacing(sweep_dir / "multirun.yaml") as tmp:  # whole or absent, whenever killed
                    OmegaConf.save(self.config, tmp)
            # each job's overrides as the user wrote them: without the folder name the sweeper adds
            overrides = [[o for o in job if not o.startswith("hydra.sweep.subdir=")] for job in jobs]
            done = [self.resuming and finished(sweep_dir / f) for f in folders]
            # a finished job kept as it is keeps its recorded overrides (not a continuation's larger budget)
            recorded = {job["dir"]: job["overrides"] for job in sweep_record.read_jobs(sweep_dir)} if any(done) else {}
            overrides = [recorded.get(f, o) if d else o for o, f, d in zip(overrides, folders, done, strict=True)]
            sweep_record.write_jobs(sweep_dir, overrides, folders)
            todo = [job for job, job_done in zip(jobs, done, strict=True) if not job_done]
            # (a budget given to the continuation is for the jobs it runs)
            further = "; a larger budget for one: python scripts/train.py resume=<its folder> ..."
            kept = f" ({sum(done)} finished before, kept as they are{further})" if any(done) else ""
            if all(done):  # then a budget given now changes no job: said, not silently dropped
                kept = f" (every job had finished: nothing to run, a budget given now changes none{further})"
            print(f"[attnlab] sweep of {len(jobs)} jobs in {sweep_dir}{kept}", flush=True)
            code, launcher_error = 0, ""
            try:
                if todo:
                    self.launcher.launch(todo, initial_job_idx=sum(done))
            except Interrupted as e:  # the running job has saved its checkpoint (or the signal came between jobs)
                code = e.exit_code
            except Exception as e:  # the launcher itself broke (e.g. a worker was killed): report all the same
                # one line: the tool's fatal one where it gave several (sbatch: errors, then what stopped it)
                lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
                launcher_error = f"{type(e).__name__}: {next((x for x in lines if 'fatal' in x), lines[0])}"
                print(f"error: the launcher stopped: {printable(launcher_error)}", file=sys.stderr)
                code = 1
            if code == 0 and errors.pending_signal is not None:  # raised where Python ignored it (`on_signal`)
                code = 128 + errors.pending_signal
            self.deferred = -1  # a signal from here on waits until the report is written
            from attnlab.report import conclude

            code = conclude(sweep_dir, code, began, launcher_error)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.deferred > 0:  # the report was written first; the exit code says the sweep was stopped
            name = signal.Signals(self.deferred).name
            print(f"[attnlab] {name} came while the report was written: it was finished first; exit code "
                  f"{128 + self.deferred}", file=sys.stderr)  # fmt: skip
            return 128 + self.deferred
        return code

    def on_signal(self, signum: int, frame: Any) -> None:
        """SIGTERM / SIGINT while jobs run: `Interrupted`, and noted (`errors.pending_signal`): raised inside a
        finalizer (a finished job's objects collected), Python prints and ignores it, and the next job (its
        StopOnSignal) or the end of the launch stops on the note instead. Once `deferred` is set (-1): noted, so
        that the report is written whole, and the sweep then exits with 128 + signal."""
        if not self.deferred:
            errors.pending_signal = errors.pending_signal or signum
            raise Interrupted(signum)
        self.deferred = signum
