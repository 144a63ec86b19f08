"""`hydra/sweeper=attnlab` (the default of conf/train.yaml): Hydra's basic sweeper, made to lose nothing.

Before any job runs, every job's config is composed and checked (`config.validate`), and two jobs
that would share a folder are refused. The sweep folder is claimed like a run folder
(`attnlab.run_folder.claim`): two sweeps started in the same second get folders of their own.

Then the jobs run on whatever launcher is configured. A job never ends the sweep by failing: it
leaves `FAILED` in its folder and the others go on. A signal (Ctrl-C, SIGTERM) stops the sweep
after the running job has saved its checkpoint. Whatever happened, the report (results.csv,
summary.md, plots) is written, and the exit code is 0 only when every job finished: 1 when some
job failed or did not run, 128 + signal when the sweep was stopped.

`python scripts/train.py -m resume=<sweep dir>` (rewritten by scripts/train.py into the sweep's own
overrides plus `resume=true`) continues a sweep: finished jobs are kept as they are, the others
resume from their newest checkpoint or start.

(Hydra loads sweepers only from the `hydra_plugins` namespace package, hence this folder. No `from
__future__ import annotations` here: Hydra imports plugins in a way that breaks string annotations
on dataclasses. `BasicSweeper` lives in `hydra._internal`; we reuse its parsing and batching.)
"""

import contextlib
import functools
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict, read_write

from attnlab import resume, run_folder
from attnlab.clock import process_seconds
from attnlab.config import to_plain, validate
from attnlab.errors import ConfigError, Interrupted
from attnlab.naming import hydra_quote, job_names


@dataclass
class ValidatingSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.attnlab_sweeper.ValidatingSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="attnlab", node=ValidatingSweeperConf, provider="attnlab")


class SweepSignals:
    """SIGTERM / SIGINT while jobs run: `Interrupted` in the sweep process (a job in this process has
    its own handler, which saves its checkpoint first). After `defer()`: noted, so the report is always
    written, and the sweep then exits with 128 + signal."""

    def __init__(self) -> None:
        self.deferred = 0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "SweepSignals":
        self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def defer(self) -> None:
        self.deferred = -1

    def handle(self, signum: int, frame: Any) -> None:
        if self.deferred:
            self.deferred = signum
            return
        raise Interrupted(signum)


def import_attnlab() -> None:
    import attnlab.train  # noqa: F401  (torch, Lightning and attnlab: the seconds a worker needs to start)


def exit_with_sweep(sweep_pid: int) -> None:
    """Run first in every joblib worker: exit as soon as the sweep process that started it is gone
    (its pid is passed in: it may have died while this worker was still starting).
    loky notices a dead parent only when a worker next talks to it, so a sweep killed (SIGKILL, the OOM
    killer) while its workers started or waited for work left them behind for good, each holding torch
    in memory (tests/test_chaos.py counts them)."""

    def watch() -> None:
        while os.getppid() == sweep_pid:  # re-parented (to init or a subreaper) once the sweep has died
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="attnlab-exit-with-sweep", daemon=True).start()


def workers_exit_with_sweep() -> None:
    """Give this process's loky workers `exit_with_sweep` as their initializer. Hydra's joblib launcher
    asks joblib for the backend by name ("loky") and has no initializer setting, so the name is
    registered again here, in the sweep process only, with the initializer bound; the pool that
    `warm_workers` starts and the launcher's then ask for the same settings and stay one pool."""
    from joblib import register_parallel_backend
    from joblib.parallel import BACKENDS  # not public: the class behind the name (CONTRIBUTING.md)

    loky = BACKENDS["loky"]
    if getattr(loky, "keywords", {}).get("initializer") is not exit_with_sweep:
        bound = functools.partial(loky, initializer=exit_with_sweep, initargs=(os.getpid(),))
        register_parallel_backend("loky", bound)


def joblib_workers(settings: Any) -> int:
    """How many workers the joblib launcher's settings start (n_jobs; -1: one per core)."""
    from joblib import cpu_count

    n_jobs = settings.get("n_jobs") or 1
    return cpu_count() if n_jobs < 0 else n_jobs


def no_more_workers_than_jobs(launcher: Any, jobs: int) -> None:
    """hydra/launcher=joblib starts `n_jobs` workers (-1: one per core) whatever the number of jobs, and
    each spends seconds importing torch and Lightning: a sweep of fewer jobs gets as many workers as it
    has jobs (one job: none, it runs in this process, as on the basic launcher)."""
    settings = getattr(launcher, "joblib", None)
    if settings is None:
        return
    if jobs < joblib_workers(settings):
        settings["n_jobs"] = max(jobs, 1)  # the launcher's own settings (a dict), read when it launches


def warm_workers(launcher: Any) -> bool:
    """With hydra/launcher=joblib: start its worker processes now, in the background, so that their
    start-up overlaps the checks of the jobs instead of following them. joblib keeps one pool of workers
    per process and the launcher reuses it, as it asks for the same settings (n_jobs, memmapping).
    Returns whether workers were started."""
    settings = getattr(launcher, "joblib", None)
    if settings is None:
        return False
    from joblib import Parallel, delayed

    workers_exit_with_sweep()
    kwargs = {k: settings[k] for k in ("n_jobs", "temp_folder", "max_nbytes", "mmap_mode") if k in settings}
    if kwargs.get("max_nbytes"):  # as the launcher passes it
        with contextlib.suppress(ValueError):
            kwargs["max_nbytes"] = int(kwargs["max_nbytes"])
    workers = joblib_workers(settings)

    def start() -> None:
        with contextlib.suppress(Exception):  # only a head start: the launcher starts workers anyway
            Parallel(backend="loky", **kwargs)(delayed(import_attnlab)() for _ in range(workers))

    threading.Thread(target=start, daemon=True).start()
    return True


def task_overrides(job: Sequence[str]) -> list[str]:
    """A job's overrides as the user wrote them: without the folder name the sweeper adds."""
    return [o for o in job if not o.startswith("hydra.sweep.subdir=")]


def recorded_names(sweep_dir: Path, grid: list[list[str]], names: list[str]) -> list[str]:
    """The folders the sweep's jobs.json gave these jobs when it started (a job matches the record whose
    overrides it has, `resume=` aside: a continuation may add some); `names` for jobs it does not hold."""
    source = sweep_dir / "jobs.json"
    try:
        record = json.loads(source.read_text())["jobs"]
        saved = [({o for o in job["overrides"] if not o.startswith("resume=")}, job["dir"]) for job in record]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return names
    for _, folder in saved:  # a record is input: a job's folder stays inside its sweep (ConfigError)
        run_folder.inside(sweep_dir, folder, "resume", source)
    kept = []
    for job, name in zip(grid, names, strict=True):
        matches = [folder for overrides, folder in saved if overrides <= set(job)]
        kept.append(matches[0] if len(matches) == 1 else name)
    return kept


class ValidatingSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        began = time.perf_counter()
        params = [*self._parse_config(), *arguments]
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params), None)
        grid = [list(job) for batch in self.overrides for job in batch]
        # Each job's folder: the values that vary (attnlab.naming.job_names), set through Hydra's own key.
        names = job_names(grid)
        resuming = bool(self.config.get("resume"))
        if resuming:  # a sweep keeps its jobs' folders, whatever names this version would give them
            try:
                run_folder.check_no_links_out(Path(str(self.config.hydra.sweep.dir)), "resume", depth=0)
                names = recorded_names(Path(str(self.config.hydra.sweep.dir)), grid, names)
            except ConfigError as e:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(1)
        if any(o.split("=", 1)[0] == "hydra.sweep.subdir" for o in self.config.hydra.overrides.hydra):
            jobs = grid  # the user's own folder names win
        else:
            jobs = [[*job, f"hydra.sweep.subdir={hydra_quote(n)}"] for job, n in zip(grid, names, strict=True)]
        # Jobs print "job 3/30"; launchers' workers (joblib, submitit) inherit the environment.
        os.environ[run_folder.SWEEP_JOBS_ENV] = str(len(jobs))
        no_more_workers_than_jobs(self.launcher, len(jobs))
        # Before any write. Workers start once the first job passed: a bad value given for the whole sweep
        # fails every job, and is answered without waiting for workers to start and stop.
        folders = self.check_jobs(
            jobs, Path(str(self.config.hydra.sweep.dir)), resuming, after_first=lambda: warm_workers(self.launcher)
        )
        try:
            sweep_dir = self.claim_sweep_dir(resuming)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        with SweepSignals() as signals:
            code = self.run_jobs(sweep_dir, jobs, folders, resuming, signals, began)
        run_folder.release(sweep_dir)
        if code:
            sys.exit(code)

    def run_jobs(
        self,
        sweep_dir: Path,
        jobs: list[list[str]],
        folders: list[str],
        resuming: bool,
        signals: "SweepSignals",
        began: float,
    ) -> int:
        """Launch the jobs not yet finished, then write the report; returns the exit code."""
        if not (sweep_dir / "multirun.yaml").exists():  # a continued sweep keeps its original record
            tmp = sweep_dir / "multirun.yaml.tmp"  # whole or absent, whenever the sweep is killed
            OmegaConf.save(self.config, tmp)
            os.replace(tmp, sweep_dir / "multirun.yaml")
        run_folder.write_json_atomic(
            sweep_dir / "jobs.json",
            {"jobs": [{"overrides": task_overrides(j), "dir": f} for j, f in zip(jobs, folders, strict=True)]},
        )
        todo = [
            j
            for j, f in zip(jobs, folders, strict=True)
            if not (resuming and run_folder.status(sweep_dir / f)[0] == "ok")
        ]
        kept = len(jobs) - len(todo)
        print(
            f"[attnlab] sweep of {len(jobs)} jobs in {sweep_dir}"
            + (f" ({kept} finished before, kept as they are)" if kept else ""),
            flush=True,
        )
        code = 0
        try:
            if todo:
                self.launcher.launch(todo, initial_job_idx=kept)
        except Interrupted as e:  # the running job has saved its checkpoint (or the signal came between jobs)
            code = e.exit_code
        except KeyboardInterrupt:  # a parallel launcher's pool was stopped
            code = 128 + signal.SIGINT
        except Exception as e:  # the launcher itself broke (e.g. a joblib worker was killed): report all the same
            print(f"error: the launcher stopped: {type(e).__name__}: {e}", file=sys.stderr)
            code = 1
        signals.defer()  # a signal from here on waits until the report is written
        code = self.finish(sweep_dir, code, began)
        if signals.deferred > 0:  # the report was written first; the exit code says the sweep was stopped
            name = signal.Signals(signals.deferred).name
            print(f"[attnlab] stopped by {name} while the report was written (it was finished first)", file=sys.stderr)
            return 128 + signals.deferred
        return code

    def claim_sweep_dir(self, resuming: bool) -> Path:
        explicit = any(o.split("=", 1)[0] == "hydra.sweep.dir" for o in self.config.hydra.overrides.hydra)
        wanted = Path(str(self.config.hydra.sweep.dir))
        sweep_dir = run_folder.claim(wanted, "hydra.sweep.dir", explicit, resuming, marker="multirun.yaml")
        if sweep_dir != wanted:  # taken: a suffixed name. Jobs' configs are recomposed from the hydra overrides.
            with read_write(self.config.hydra):
                self.config.hydra.sweep.dir = str(sweep_dir)
                self.config.hydra.overrides.hydra.append(f"hydra.sweep.dir={hydra_quote(str(sweep_dir))}")
        return sweep_dir

    def check_jobs(
        self, jobs: Sequence[Sequence[str]], sweep_dir: Path, resuming: bool, after_first: Any = lambda: False
    ) -> list[str]:
        """Each job's folder (relative to the sweep), after checking its config; a bad job ends the sweep
        before any job runs, with the job named."""
        folders: dict[str, int] = {}
        configs: dict[str, int] = {}  # each job's resolved config: two jobs of one config would count twice
        for num, overrides in enumerate(jobs):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            folder = str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
            with open_dict(cfg):
                del cfg["hydra"]
                cfg.output_dir = str(sweep_dir / folder)
            try:
                c = to_plain(cfg)
                validate(c)
                if folder in folders:
                    raise ConfigError("job", folder, f"job #{folders[folder]} has the same overrides (the same folder)")
                same = json.dumps({k: v for k, v in c.items() if k != "output_dir"}, sort_keys=True, default=str)
                if same in configs:
                    raise ConfigError("job", folder, f"job #{configs[same]} has the same config: a seed or cell twice")
                configs[same] = num
                resume.check(c, sweep_dir / folder)
            except ConfigError as e:
                print(f"error: job #{num} ({' '.join(task_overrides(overrides))}): {e}", file=sys.stderr)
                sys.exit(1)  # (a pool of warmed workers is shut down at exit, after they started: a few seconds)
            folders[folder] = num
            if num == 0:
                after_first()
        return list(folders)

    def finish(self, sweep_dir: Path, code: int, began: float) -> int:
        """Write the report and say how the sweep ended; returns the exit code."""
        from attnlab.report import write_report

        try:
            rows = write_report(sweep_dir)
        except Exception as e:  # the report must not hide the outcome: say so, and fail
            print(f"error: the report could not be written: {type(e).__name__}: {e}", file=sys.stderr)
            return code or 1
        bad = [r for r in rows if r["status"] != "ok"]
        seconds = process_seconds(began)  # from process start: imports and the up-front checks included
        failed = f", {len(bad)} did not finish" if bad else ""
        from attnlab.report import verdict_lines

        print("\n".join(verdict_lines(rows)), flush=True)
        print(
            f"[attnlab] sweep done in {seconds:.1f} s: {len(rows) - len(bad)}/{len(rows)} jobs ok{failed}\n"
            f"[attnlab] report: {sweep_dir / 'summary.md'}\n"
            f"[attnlab] curves: tensorboard --logdir {shlex.quote(str(sweep_dir / 'tensorboard'))}",
            flush=True,
        )
        for r in bad:
            print(f"[attnlab] {r['status']}: {r['job']} {r.get('error', '')}".rstrip(), file=sys.stderr)
        if bad:
            print(
                f"[attnlab] continue with: python scripts/train.py -m resume={shlex.quote(str(sweep_dir))}",
                file=sys.stderr,
            )
        return code or (1 if bad else 0)
