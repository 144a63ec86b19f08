"""`hydra/launcher=processes`: a sweep's jobs in worker processes forked from the sweep, one per core (never more
than jobs; torch's threads divided among them), each job run as Hydra's launchers run one (`run_job` on the config
`load_sweep_config` gives, here composed once per choice of config groups: `job_config`). Forked while the sweeper
checks the jobs (`start`), a worker has the config already and imports Lightning meanwhile; it is sent only
overrides. None outlives the sweep: the sweeper stops them however it ends, passing its signal on (`kill <sweep
pid>` reaches only the sweep), and a worker whose sweep was SIGKILLed exits within half a second.
"""

import copy
import functools
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from attnlab import errors
from attnlab.errors import ConfigError, Interrupted

log = logging.getLogger(__name__)


@dataclass
class ProcessesLauncherConf:
    _target_: str = "hydra_plugins.attnlab_sweeper.launcher.ProcessesLauncher"
    n_jobs: int = -1  # worker processes: -1 one per core; never more than the sweep has jobs


ConfigStore.instance().store(group="hydra/launcher", name="processes", node=ProcessesLauncherConf, provider="attnlab")


class Overrides:
    """A sweep's overrides, each parsed once (a grid repeats them), told apart: what Hydra composes from (choices
    of config groups, and `hydra.searchpath`, where it finds them) and values (set on a composition)."""

    def __init__(self, loader: Any) -> None:
        self.parser = OverridesParser.create(config_loader=loader)
        self.parse = functools.cache(lambda override: self.parser.parse_overrides([override])[0])
        self.groups = frozenset([*loader.list_groups(""), "hydra.searchpath"])  # conf/<group>/, hydra's; where they are

    def split(self, overrides: list[str]) -> tuple[list[Any], tuple[str, ...], list[Any]]:
        """(all parsed, what Hydra composes from as written, the values)."""
        parsed = [self.parse(o) for o in overrides]
        composed = [o for o in parsed if o.key_or_group.split("/")[0] in self.groups]
        groups = tuple(o.input_line for o in composed)
        return parsed, groups, [o for o in parsed if o.input_line not in groups]


class ProcessesLauncher(Launcher):
    def __init__(self, n_jobs: int = -1) -> None:
        self.n_jobs = n_jobs
        self.executor: ProcessPoolExecutor | None = None
        self.compositions: dict[tuple, DictConfig] = {}  # Hydra's, per sweep folder and choice of config groups

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.overrides = Overrides(hydra_context.config_loader)

    def check(self) -> None:
        """ConfigError for settings no worker could run with (the sweeper asks before any job starts)."""
        if not (self.n_jobs == -1 or self.n_jobs >= 1):  # 0: no worker at all
            why = "must be -1 (one worker per core) or an integer >= 1"
            raise ConfigError("hydra.launcher.n_jobs", self.n_jobs, why)

    def workers(self, jobs: int) -> int:
        """n_jobs, or with -1 the cores this process may run on (a SLURM allocation's, not the node's)."""
        return max(1, min(jobs, len(os.sched_getaffinity(0)) if self.n_jobs < 0 else self.n_jobs))

    def start(self, jobs: int) -> None:
        """Fork the workers now, to import Lightning while the other jobs are checked (one: jobs run here)."""
        workers = self.workers(jobs)
        if self.executor is not None or workers == 1:
            return
        global launcher
        launcher = self  # what the forked workers run jobs with (inherited, not pickled)
        sys.stdout.flush()
        sys.stderr.flush()  # else what the buffers hold would be printed again by each worker
        gc.freeze()  # the sweep's objects stay shared with the workers, and out of their collections
        fork = multiprocessing.get_context("fork")
        self.executor = ProcessPoolExecutor(workers, fork, initializer=start_worker, initargs=(os.getpid(),))
        self.executor.submit(int)  # forks every worker now (the executor forks them all at its first job)
        log.info(f"Started {workers} worker processes")

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        setup_globals()
        jobs = [(idx, list(overrides)) for idx, overrides in enumerate(job_overrides, start=initial_job_idx)]
        self.start(len(jobs))
        log.info(f"Launching {len(jobs)} jobs on {self.workers(len(jobs))} worker processes")
        if self.executor is None:
            return [self.run(idx, overrides) for idx, overrides in jobs]
        # The sweep's own overrides go along: the sweeper may have moved it to a free folder since the fork.
        sweep = list(self.config.hydra.overrides.hydra)
        futures = [self.executor.submit(run_in_worker, idx, overrides, sweep) for idx, overrides in jobs]
        try:
            return [future.result() for future in futures]
        except Interrupted as e:  # this process was signalled, or a job was (and stopped): passed on
            for future in futures:  # first: a worker that returns now must not take another job
                future.cancel()
            self.stop(e.signum)
            raise
        finally:  # all done, or a worker died (BrokenProcessPool)
            self.stop()

    def run(self, idx: int, overrides: list[str]) -> JobReturn:  # as Hydra's basic launcher
        sweep_config = self.job_config(overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
            sweep_config.hydra.job.num = idx
        # (not HydraConfig.set_config first, as the basic launcher does: run_job sets it itself)
        return run_job(self.task_function, sweep_config, "hydra.sweep.dir", "hydra.sweep.subdir", self.hydra_context)

    def job_config(self, overrides: list[str]) -> DictConfig:
        """The job's config as Hydra's `load_sweep_config` gives it, at a twentieth of its cost: its `key=value`s
        set as Hydra sets them on a copy of its config groups' composition (a `+`, `++` or `~`: composed whole)."""
        load = self.hydra_context.config_loader.load_sweep_config
        parsed, groups, values = self.overrides.split(overrides)
        if any(o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None for o in values):
            return load(self.config, overrides)
        sweep = list(self.config.hydra.overrides.hydra)  # the sweep's own (its folder): part of the composition
        key = (tuple(sweep), groups)
        if key not in self.compositions:
            self.compositions[key] = load(self.config, list(groups))
        cfg = copy.deepcopy(self.compositions[key])
        for o in values:
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        task = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        cfg.hydra.overrides.hydra = [*sweep, *(o.input_line for o in parsed if o.is_hydra_override())]
        named = cfg.hydra.job.config.override_dirname  # as Hydra names a job by its overrides
        lines = sorted(o.input_line for o in task if o.key_or_group not in named.exclude_keys)
        cfg.hydra.job.override_dirname = named.item_sep.join(lines).replace("=", named.kv_sep)
        OmegaConf.copy_cache(from_config=self.config, to_config=cfg)  # ${now:...} as the sweep resolved it
        return cfg

    def stop(self, signum: int | None = None, kill: bool = False) -> None:
        """Jobs not started dropped; `signum` passed on to the running ones, which stop and save. `kill`: the
        sweep ends before its first job; its workers hold nothing but imports."""
        if self.executor is None:
            return
        executor, self.executor = self.executor, None
        if kill or signum is not None:
            for worker in multiprocessing.active_children():
                os.kill(worker.pid, signal.SIGKILL if kill else signum)  # type: ignore[arg-type]
        # Waited for whole: a second Ctrl-C raised inside the pool's shutdown would leave it half shut down (the
        # sweep hanging at its exit). The running jobs have the signal already.
        ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            executor.shutdown(wait=True, cancel_futures=True)
        finally:
            for sig, handler in ignored.items():
                signal.signal(sig, handler)


launcher: ProcessesLauncher | None = None  # in a worker: the sweep's launcher, as it was forked


def start_worker(sweep_pid: int) -> None:
    """First in every worker: its signals, its exit with the sweep, and the imports its jobs need."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    def watch() -> None:
        while os.getppid() == sweep_pid:  # re-parented (to init or a subreaper) once the sweep has died
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="attnlab-exit-with-sweep", daemon=True).start()
    import attnlab.train  # noqa: F401  (Lightning: seconds, here while the sweep checks its jobs)

    gc.collect()
    gc.freeze()  # out of the collector: each job's collections walk only what the jobs made


def on_signal(signum: int, frame: Any) -> None:
    """A worker's SIGTERM / SIGINT outside a run's handling: noted, not raised (raised from a handler it can
    land in a finalizer and be swallowed)."""
    errors.pending_signal = errors.pending_signal or signum


def run_in_worker(idx: int, overrides: list[str], sweep: list[str]) -> JobReturn:
    """Job `idx`, in a worker; `sweep`: the sweep's Hydra overrides now (its folder may have moved since)."""
    if errors.pending_signal is not None:
        raise Interrupted(errors.pending_signal)
    assert launcher is not None
    with read_write(launcher.config.hydra):
        launcher.config.hydra.overrides.hydra = sweep
    try:
        ret = launcher.run(idx, overrides)
    except Interrupted as e:  # (by the run's own handling, which had taken over the signal)
        errors.pending_signal = e.signum
        raise
    ret.cfg, ret.hydra_cfg = None, None  # what the sweep needs back is how the job ended, not its config
    return ret
