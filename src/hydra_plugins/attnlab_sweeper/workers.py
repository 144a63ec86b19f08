"""The life of hydra/launcher=joblib's worker processes under an attnlab sweep: as many as there are jobs
(not one per core for a sweep of three), started while the jobs are checked, and gone with the sweep."""

import contextlib
import functools
import gc
import multiprocessing
import os
import threading
import time
from typing import Any


def start_worker(sweep_pid: int) -> None:
    """Run first in every joblib worker. It exits once the sweep process that started it is gone (its pid is
    passed in: the sweep may die while the worker starts): loky notices a dead parent only when a worker next
    talks to it, so a killed sweep (SIGKILL, the OOM killer) left its workers behind, each holding torch.
    It imports torch, Lightning and attnlab (the seconds a worker takes to start), then freezes them out of
    the collector: without psutil, loky runs `gc.collect()` after every task, which walked those ~400,000
    objects (0.25 s, a quarter of a short job); frozen, it walks what the jobs made."""

    def watch() -> None:
        while os.getppid() == sweep_pid:  # re-parented (to init or a subreaper) once the sweep has died
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="attnlab-exit-with-sweep", daemon=True).start()
    import attnlab.train  # noqa: F401

    gc.collect()
    gc.freeze()


def joblib_workers(settings: Any) -> int:
    """How many workers the joblib launcher's settings start (n_jobs; -1: one per core)."""
    from joblib import cpu_count

    n_jobs = settings.get("n_jobs") or 1
    return cpu_count() if n_jobs < 0 else n_jobs


def no_more_workers_than_jobs(launcher: Any, jobs: int) -> None:
    """hydra/launcher=joblib starts `n_jobs` workers whatever the number of jobs, and each spends seconds
    importing torch and Lightning: a sweep of fewer jobs gets as many workers as it has jobs."""
    settings = getattr(launcher, "joblib", None)
    if settings is not None and jobs < joblib_workers(settings):
        settings["n_jobs"] = max(jobs, 1)  # the launcher's own settings (a dict), read when it launches


def warm_workers(launcher: Any) -> None:
    """With hydra/launcher=joblib: start its worker processes now, in the background, so that their start-up
    overlaps the checks of the jobs instead of following them. joblib keeps one pool of workers per process
    and the launcher reuses it, as it asks for the same settings."""
    settings = getattr(launcher, "joblib", None)
    if settings is None:
        return
    from joblib import Parallel, delayed, register_parallel_backend
    from joblib.parallel import BACKENDS

    # Hydra's launcher asks joblib for the backend by name ("loky") and has no initializer setting: the name
    # is registered again, in the sweep process only, with `start_worker` bound (CONTRIBUTING.md: private APIs).
    loky = BACKENDS["loky"]
    if getattr(loky, "keywords", {}).get("initializer") is not start_worker:
        register_parallel_backend("loky", functools.partial(loky, initializer=start_worker, initargs=(os.getpid(),)))
    kwargs = {k: settings[k] for k in ("n_jobs", "temp_folder", "max_nbytes", "mmap_mode") if k in settings}
    if kwargs.get("max_nbytes"):  # as the launcher passes it
        with contextlib.suppress(ValueError):
            kwargs["max_nbytes"] = int(kwargs["max_nbytes"])
    workers = joblib_workers(settings)

    def start() -> None:
        with contextlib.suppress(Exception):  # only a head start: the launcher starts workers anyway
            # a task that only makes a worker start: its initializer, `start_worker`, does the work
            Parallel(backend="loky", **kwargs)(delayed(os.getpid)() for _ in range(workers))

    warming.append(threading.Thread(target=start, daemon=True))
    warming[-1].start()


warming: list[threading.Thread] = []  # the thread of `warm_workers` (joblib only), which `stop_workers` waits for


def stop_workers() -> None:
    """With hydra/launcher=joblib: its workers shut down and waited for (joblib keeps idle workers until their
    timeout), so that none outlives the sweep. Workers still starting (the sweep refused or stopped during its
    checks) have done nothing yet: they are terminated at once rather than waited for through their seconds of
    imports (joblib's warming call then fails, and its thread ends). The resource trackers their queues
    started stop on their own once they read their pipe's end, just after this process: stopping them here
    would wait for every process holding that pipe, which can deadlock (python/cpython#146313)."""
    if not warming:  # no worker was started: another launcher, or the first job was refused
        return
    while warming:
        thread = warming.pop()
        while thread.is_alive():  # (a worker may be started meanwhile: each pass stops those there are)
            for worker in multiprocessing.active_children():
                worker.terminate()
            thread.join(timeout=0.05)
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(reuse=True)  # the running one (a new one where the workers were stopped)
    getattr(executor, "terminate", executor.shutdown)()  # joblib's: also deletes its temporary folders
