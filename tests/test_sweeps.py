"""Sweeps through the real entry point: launchers, job folders, the report, failed jobs."""

import csv
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from attnlab.evaluate import evaluate_run
from attnlab.train import train

from .conftest import CLI_ENV, CONF, ROOT, TINY, compose_train, image_steps, python, read_metrics, run_train

# 2 seeds x 2 learning rates; lr=1e30 makes the loss NaN at step 1, so those 2 jobs fail at run time.
LAUNCHER_MESSAGES = "hydra.hydra_logging.root.level=INFO"  # Hydra's launcher says which it is (quiet by default)
SWEEP = ["-m", *TINY, "data=halfswap", "model.pos_enc=sinusoidal", "seed=0,1", "optim.lr=0.003,1e30"]


def run_sweep(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    sweep_dir = tmp_path / "sweep"
    return run_train(*SWEEP, *extra, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path), sweep_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def check_sweep(proc: subprocess.CompletedProcess[str], sweep_dir: Path) -> None:
    assert proc.returncode == 1, proc.stderr[-2000:]  # jobs failed: the multirun says so
    assert "failed: " in proc.stderr
    jobs = sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    # named by the values that vary, in the order Hydra's grid gives them
    assert jobs == [f"seed={seed},lr={lr}" for seed in (0, 1) for lr in ("0.003", "1e+30")], jobs
    rows = {r["job"]: r for r in read_csv(sweep_dir / "results.csv")}
    assert set(rows) == set(jobs)
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert sorted(r["seed"] for r in failed) == ["0", "1"] and all(r["lr"] == "1e+30" for r in failed)
    assert all("FloatingPointError" in r["error"] for r in failed)
    for job in jobs:  # the failure is in the job's own folder, with its traceback
        assert (sweep_dir / job / "FAILED").is_file() == ("1e+30" in job)
        assert list((sweep_dir / job).glob("events.out.tfevents.*"))  # and nobody shares a TensorBoard run
    ok = [r for r in rows.values() if r["status"] == "ok"]
    accs = [read_metrics(sweep_dir / r["job"])["test/acc"] for r in ok]
    assert sorted(float(r["test/acc"]) for r in ok) == sorted(accs)
    summary = (sweep_dir / "summary.md").read_text()
    mean, std = statistics.fmean(accs), statistics.stdev(accs)
    assert f"| 2 | {mean:.3f} ± {std:.3f} |" in summary
    assert "## Jobs without results" in summary and summary.count("| failed |") == 2
    assert (sweep_dir / "acc_by_task_pos_enc.png").stat().st_size > 0


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """SWEEP on the basic launcher; tests that change its folder take a copy."""
    return run_sweep(tmp_path_factory.mktemp("basic"))


def test_basic_launcher_and_report(basic_sweep, tmp_path: Path) -> None:
    proc, original = basic_sweep
    check_sweep(proc, original)
    sweep_dir = Path(shutil.copytree(original, tmp_path / "sweep"))
    # scripts/report.py gives the same files again, and says that jobs failed with its exit code
    (sweep_dir / "results.csv").unlink()
    report = subprocess.run(
        [*python(), str(ROOT / "scripts" / "report.py"), str(sweep_dir)], env=CLI_ENV, capture_output=True, text=True
    )
    assert report.returncode == 1 and "Jobs without results" in report.stdout
    check_sweep(proc, sweep_dir)


def test_a_sweep_jobs_start_up_is_its_own(basic_sweep) -> None:
    """startup_seconds of a sweep's job was the sweep process's age at its first step: the jobs before it (on
    the basic launcher, in the same process) counted as its start-up. From the job's own start now."""
    _, sweep_dir = basic_sweep
    jobs = [p.parent for p in sweep_dir.glob("*/metrics.json")]
    # within the job: after Hydra wrote its config, before it wrote its results
    lasted = {
        job: ((job / "metrics.json").stat().st_mtime - (job / ".hydra" / "config.yaml").stat().st_mtime) for job in jobs
    }
    assert len(jobs) == 2 and all(0 < read_metrics(job)["startup_seconds"] < lasted[job] for job in jobs), lasted


def test_job_in_sweep_equals_the_same_run_alone(basic_sweep, tmp_path: Path) -> None:
    _, sweep_dir = basic_sweep
    job = next(p for p in sweep_dir.iterdir() if p.name == "seed=1,lr=0.003")
    alone = tmp_path / "alone"
    train(compose_train(alone, *SWEEP[1:-2], "seed=1", "optim.lr=0.003"))
    a, b = read_metrics(job), read_metrics(alone)
    assert (a["test/acc"], a["test/loss"], a["val/acc_best"]) == (b["test/acc"], b["test/loss"], b["val/acc_best"])


@pytest.mark.slow
def test_processes_launcher(tmp_path: Path) -> None:
    # the launcher's own messages: hydra.verbose, a setting a continued sweep takes over from its record
    verbose = "hydra.verbose=hydra_plugins.attnlab_sweeper.launcher"
    proc, sweep_dir = run_sweep(tmp_path, "hydra/launcher=processes", "hydra.launcher.n_jobs=2", verbose)
    # the workers start while the jobs are checked, before the sweep has recorded its jobs and says so
    said = proc.stdout
    assert said.index("Started 2 worker processes") < said.index("[attnlab] sweep of 4 jobs"), said
    assert "Launching 4 jobs on 2 worker processes" in said
    # The workers start while the jobs are checked (attnlab_sweeper.launcher: `start`) and still know the size
    # (the two jobs with lr=1e30 fail: two of four done)
    assert sorted(re.findall(r"\] (\d)/4 done: ", proc.stdout)) == ["1", "2"], proc.stdout[-2000:]
    check_sweep(proc, sweep_dir)
    # Continued, its two failed jobs left: workers for those two, not for the grid's four (n_jobs allows four)
    again = run_train("-m", f"resume={sweep_dir}", "hydra.launcher.n_jobs=4", cwd=tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr[-2000:]  # lr=1e30 fails again
    assert "Started 2 worker processes" in again.stdout and "Launching 2 jobs on 2" in again.stdout, again.stdout


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path: Path) -> None:
    """Jobs in processes submitit starts (the task pickled, not forked): one seed (the later `seed=0` replaces
    the grid's), a job that finishes and one that fails."""
    proc, sweep_dir = run_sweep(tmp_path, "hydra/launcher=submitit_local", LAUNCHER_MESSAGES, "seed=0")
    assert "Submitit 'local'" in proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stderr[-2000:]
    rows = {r["job"]: r for r in read_csv(sweep_dir / "results.csv")}
    assert {job: r["status"] for job, r in rows.items()} == {"lr=0.003": "ok", "lr=1e+30": "failed"}, rows
    assert "FloatingPointError" in (sweep_dir / "lr=1e+30" / "FAILED").read_text() and "failed: " in proc.stderr
    for job in rows:  # nobody shares a TensorBoard run
        assert list((sweep_dir / job).glob("events.out.tfevents.*")), job
    assert float(rows["lr=0.003"]["test/acc"]) == read_metrics(sweep_dir / "lr=0.003")["test/acc"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    proc = run_train(
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "verbose=true",  # Lightning's messages, "Initializing distributed" among them
        "diagnostics=true",
        "eval.seq_lens=[8,16]",  # (scored by the first process alone: a metric's sync waited for the other, gone)
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
    # no advice that does not apply (the values logged are reduced over the processes already), and train/loss
    # logged within each process's share of an epoch (2 of the 4 batches), which said "4 > 2" before
    assert "sync_dist=True" not in proc.stderr and "smaller than the logging interval" not in proc.stderr
    metrics = read_metrics(run_dir)
    # 256 training sequences, batch 64, split over 2 processes: 2 steps per epoch
    assert metrics["global_step"] == 2
    tested = metrics["tested_checkpoint"]["global_step"]
    assert image_steps(run_dir, "attention/layer0_head0") == [tested]  # the figures: once, not once a process
    lengths = json.loads((run_dir / "evaluation.json").read_text())["lengths"]
    assert lengths.keys() == {"8", "16"} and lengths["8"]["acc"] == metrics["test/acc"]  # 8: the own test set
    # the two processes' test results, gathered, are those of the best checkpoint on the whole test set
    assert (
        evaluate_run(run_dir, {"seq_lens": [8], "n": None, "batch_size": 256, "untrained": "refuse"})["lengths"]["8"][
            "acc"
        ]
        == metrics["test/acc"]
    )
    # the epoch's train/acc counts in its checkpoint are both processes' (a resume inside an epoch goes on from them)
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert int(saved["acc.train_acc.tp"] + saved["acc.train_acc.fn"]) == 256  # each process's share: 128
    # resumed by its folder: the process of rank 1 gets the rewritten command line (resume=true) again
    resumed = run_train(f"resume={run_dir}", "trainer.max_epochs=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_metrics(run_dir)["global_step"] == 4


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_experiments_are_designed_to_answer_their_question(experiment: str) -> None:
    """>= 3 seeds per cell, a budget that runs until validation stops improving (with a cap), no grid
    axis a plot would average over, and the job count its comment states."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [f"experiment={experiment}", "output_dir=x"], return_hydra_config=True)
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    assert len(params.get("seed", [])) >= 3, params
    assert cfg.early_stop.patience is not None and cfg.trainer.max_epochs >= 30
    grid = 1
    for v in params.values():
        grid *= len(v)
    text = (CONF / "experiment" / f"{experiment}.yaml").read_text()
    assert f"= {grid} jobs" in text
    if "data.seq_len" in params:  # one line per encoding: no other axis folded into it
        assert set(params) == {"data.seq_len", "model.pos_enc", "seed"}
        assert cfg.model.max_len >= max(map(int, params["data.seq_len"]))  # learned/relative reach every length


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_studies_run_their_jobs_in_parallel_unless_told_otherwise(experiment: str) -> None:
    """A study uses every core (processes: one job per core, torch threads divided); a launcher given on
    the command line (basic, slurm, ...) still wins over the study's."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        study = compose("train", [f"experiment={experiment}", "output_dir=x"], return_hydra_config=True)
        basic = compose(
            "train", [f"experiment={experiment}", "hydra/launcher=basic", "output_dir=x"], return_hydra_config=True
        )
        slurm = compose(
            "train", [f"experiment={experiment}", "hydra/launcher=slurm", "output_dir=x"], return_hydra_config=True
        )
    assert study.hydra.launcher._target_.endswith("ProcessesLauncher") and study.hydra.launcher.n_jobs == -1
    assert basic.hydra.launcher._target_.endswith("BasicLauncher")
    assert slurm.hydra.launcher._target_.endswith("AttnlabSlurmLauncher")


def test_long_override_lists_still_make_valid_folder_names() -> None:
    from attnlab.naming import job_dirname

    short = "data=halfswap,seed=1"
    assert job_dirname(short) == short
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(job_dirname(long_a)) <= 200 and job_dirname(long_a) != job_dirname(long_b)
    assert job_dirname(long_a).startswith("x" * 100)


def test_a_continued_sweep_keeps_the_folders_its_jobs_json_recorded(tmp_path: Path) -> None:
    """Folders named by an earlier version (all overrides) stay theirs when the sweep is continued, even
    with an override added for every job; a job the record lacks gets this version's name."""
    from attnlab.sweep_record import recorded_folders

    old = [["data=halfswap", "seed=0"], ["data=halfswap", "seed=1"]]
    (tmp_path / "jobs.json").write_text(json.dumps({"jobs": [{"overrides": o, "dir": ",".join(o)} for o in old]}))
    grid = [[*o, "resume=true", "trainer.max_epochs=40"] for o in [*old, ["data=halfswap", "seed=2"]]]
    names = ["seed=0", "seed=1", "seed=2"]
    assert recorded_folders(tmp_path, grid, names) == ["data=halfswap,seed=0", "data=halfswap,seed=1", "seed=2"]
    assert recorded_folders(tmp_path / "nowhere", grid, names) == names


@pytest.mark.parametrize(
    "grid, names",
    [
        (  # only what varies, keyed by the last part of the key
            [["data=halfswap", "model.pos_enc=none", "seed=0"], ["data=halfswap", "model.pos_enc=rope", "seed=0"]],
            ["pos_enc=none", "pos_enc=rope"],
        ),
        (  # two keys that would read the same keep their full names
            [["model.d_model=8", "optim.d_model=1"], ["model.d_model=16", "optim.d_model=2"]],
            ["model.d_model=8,optim.d_model=1", "model.d_model=16,optim.d_model=2"],
        ),
        ([["seed=0", "experiment=limitations"]], ["seed=0"]),  # one job: its overrides (experiment: the sweep's)
        ([[]], ["job"]),
        ([["data.task=../../etc"], ["data.task=x"]], ["task=..%2F..%2Fetc", "task=x"]),  # stays in the sweep
    ],
)
def test_job_folders_are_named_by_what_varies(grid, names) -> None:
    from attnlab.naming import job_names

    assert job_names(grid) == names


def test_a_subdir_given_on_the_command_line_wins(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_train(
        "-m", *TINY, "seed=0,1", "trainer.fast_dev_run=true", "hydra.sweep.subdir=s${seed}",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir()) == ["s0", "s1"]


@pytest.mark.parametrize(
    "n_jobs,jobs,workers", [(4, 2, 2), (-1, 1, 1), (2, 3, 2), (-1, 100, len(os.sched_getaffinity(0)))]
)
def test_a_sweep_starts_no_more_workers_than_jobs(n_jobs: int, jobs: int, workers: int) -> None:
    """Each worker costs a fork and Lightning's import; one job runs in the sweep's process."""
    from hydra_plugins.attnlab_sweeper.launcher import ProcessesLauncher

    assert ProcessesLauncher(n_jobs).workers(jobs) == workers


def test_a_signal_a_worker_gets_between_runs_stops_its_next_run_before_it_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's handler notes the signal (raising it could land in a finalizer, which swallows it): the job
    still starting stops as its run begins, with nothing trained, and the worker starts no other job."""
    import pickle
    import signal

    from attnlab import errors
    from attnlab.errors import Interrupted
    from hydra_plugins.attnlab_sweeper import launcher

    cfg = compose_train(tmp_path / "run", *TINY)  # (composed first: Hydra's first plugin scan runs the module anew)
    monkeypatch.setattr(errors, "pending_signal", None)
    launcher.on_signal(signal.SIGTERM, None)
    launcher.on_signal(signal.SIGINT, None)  # a repeat (Ctrl-C, then the sweep's) changes nothing
    assert errors.pending_signal == signal.SIGTERM
    with pytest.raises(Interrupted) as stopped:
        train(cfg)
    assert stopped.value.signum == signal.SIGTERM and not (tmp_path / "run" / "checkpoints").exists()
    with pytest.raises(Interrupted):  # no further job (and nothing of it composed)
        launcher.run_in_worker(7, ["seed=7"], [])
    # sent back to the sweep whole, not as its message
    back = pickle.loads(pickle.dumps(Interrupted(signal.SIGINT, 12, "x.ckpt")))
    assert (back.signum, back.step, back.checkpoint, back.exit_code) == (signal.SIGINT, 12, "x.ckpt", 130)


def test_a_sweep_that_started_no_worker_has_none_to_stop() -> None:
    """Refused at its first job, a sweep has started no worker (they start once the first job passed)."""
    from hydra_plugins.attnlab_sweeper.launcher import ProcessesLauncher

    launcher = ProcessesLauncher(2)
    launcher.stop(kill=True)
    assert launcher.executor is None and not multiprocessing.active_children()


@pytest.mark.parametrize("refused", [False, True])
def test_nothing_of_a_sweep_outlives_it(tmp_path: Path, refused: bool) -> None:
    """The sweep runs in a process group of its own: the moment its process has exited, none of its workers
    is left, whether the sweep finished or was refused while its workers started."""
    from .conftest import TRAIN, running_in_groups

    bad = ["data.seq_len=8,7"] if refused else []  # the second job is refused (halfswap: an even length)
    log = tmp_path / "sweep.log"  # a file, not a pipe: reading a pipe to its end would wait for whatever holds it
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(TRAIN), "-m", *TINY, "trainer.max_epochs=1", "seed=0,1", "data=halfswap", *bad,
             "hydra/launcher=processes", "hydra.launcher.n_jobs=2", "hydra.hydra_logging.root.level=INFO",
             f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            cwd=tmp_path, start_new_session=True, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        proc.wait(timeout=600)
    assert proc.returncode == (1 if refused else 0), log.read_text()[-2000:]

    assert "Started 2 worker processes" in log.read_text()  # (refused: after its first job passed its checks)
    assert not running_in_groups({proc.pid}, wait=0)  # its workers: gone when the sweep's process exited


@pytest.mark.parametrize(
    "args",
    [["experiment=limitations"], ["experiment=seq_len_scan"],
     ["seed=0,1", "data=halfswap,uniform", "model.pos_enc=rope,none", "+trainer.max_steps=5", "eval.seq_lens=[16,32]"],
     # values set on the plain copy, converted by their key's type (1 -> 1.0; 1 is not 1.0 for limit_train_batches)
     ["optim.lr=1,0.5", "trainer.limit_train_batches=1,1.0", "+trainer.max_steps=5,6", "model.scale=sqrt,none"],
     # a value under a section the composition lacks: set on a copy instead
     ["seed=0,1", "+extra.key=1,2"],
     # set on a copy of the composition: a key another interpolates (model.dim: ${data.dim}), an interpolated
     # value, lists of values
     ["data.dim=1,2", "data.seed=${seed},7", "eval.seq_lens=[8],[8,16]"],
     # a config group a user added (conf/optim/, not in conf/train.yaml's defaults): a group, composed by Hydra
     ["+optim=fast,slow", "seed=0,1"],
     # where Hydra finds the config groups: composed with, not set on a composition
     ["seed=0,1", "hydra.searchpath=[pkg://attnlab],[pkg://hydra_plugins]"]],
)  # fmt: skip
def test_each_job_is_checked_and_run_on_the_config_hydra_composes_for_it(args: list[str], tmp_path: Path) -> None:
    """The sweeper composes once per choice of config groups and sets each job's values on a plain copy
    (JobConfigs), and the launcher on a copy of Hydra's whole config (`job_config`, the job's folder added as the
    sweeper adds it): each is, job by job and type by type, the config Hydra composes from scratch."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import HydraContext
    from omegaconf import OmegaConf, open_dict

    from attnlab.config import to_plain
    from hydra_plugins.attnlab_sweeper import JobConfigs, grid
    from hydra_plugins.attnlab_sweeper.launcher import ProcessesLauncher

    def plain(cfg) -> dict:
        with open_dict(cfg):
            cfg.pop("hydra", None)
            cfg.output_dir = "x"
        return to_plain(cfg)

    conf = tmp_path / "conf"  # the project's, with a group of the user's own
    shutil.copytree(CONF, conf)
    (conf / "optim").mkdir()
    (conf / "optim" / "fast.yaml").write_text("lr: 0.01\n")
    (conf / "optim" / "slow.yaml").write_text("lr: 0.0001\n")
    with initialize_config_dir(str(conf), version_base="1.3"):
        master = compose("train", overrides=[a for a in args if "," not in a], return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        params = master.hydra.sweeper.params or {}
        jobs = grid(OverridesParser.create(config_loader=loader), [*(f"{k}={v}" for k, v in params.items()), *args])
        composer = JobConfigs(loader, master)
        launcher = ProcessesLauncher()
        launcher.setup(hydra_context=HydraContext(loader, callbacks=None), task_function=None, config=master)
        # Hydra's from-scratch composition costs 0.5 s a job: the jobs that bring a value no earlier one had
        checked: set[str] = set()
        for job in jobs:
            if checked.issuperset(job):
                continue
            checked.update(job)
            ours, folder = composer.compose(job, "job", output_dir="x")
            assert folder == "job"
            hydras = plain(compose("train", overrides=job, return_hydra_config=True))
            assert json.dumps(ours, sort_keys=True) == json.dumps(hydras, sort_keys=True), job
            run = [*job[::-1], "hydra.sweep.subdir='a=1,b=2'"]  # reversed: Hydra sorts them in override_dirname
            hydras = OmegaConf.to_yaml(loader.load_sweep_config(master, run))
            assert OmegaConf.to_yaml(launcher.job_config(run)) == hydras, job
    two = {  # two choices of what Hydra composes from
        "data=halfswap,uniform", "experiment=limitations", "+optim=fast,slow",
        "hydra.searchpath=[pkg://attnlab],[pkg://hydra_plugins]",
    }  # fmt: skip
    assert len(composer.composed) == (2 if two & set(args) else 1)


@pytest.mark.parametrize("job", [["+seed=1"], ["seed=0", "+model.d_model=16"], ["+trainer.max_steps=3", "+seed=2"]])
def test_a_plus_over_a_key_that_is_set_is_refused_as_hydra_refuses_it(job: list[str]) -> None:
    """`+key=value` adds a key: Hydra refuses it where the key holds a value already, and so do the sweep's checks
    (before any job runs), not each job as it starts. Over a key whose value is null Hydra accepts it: so do they."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    from attnlab.errors import ConfigError
    from hydra_plugins.attnlab_sweeper import JobConfigs

    with initialize_config_dir(str(CONF), version_base="1.3"):
        master = compose("train", return_hydra_config=True)
        composer = JobConfigs(GlobalHydra.instance().config_loader(), master)
        with pytest.raises(ConfigCompositionException, match=r"Could not append to config\. An item is already at"):
            compose("train", overrides=job)
        key = next(o for o in job if o.startswith("+") and not o.startswith("+trainer")).split("=")[0]
        with pytest.raises(ConfigError, match=rf"^\{key}=.* is set already: {key[1:]}=\.\.\. overrides it"):
            composer.compose(job, "job", output_dir="x")
        c, _ = composer.compose(["+torch_threads=2", "+ckpt_path=null"], "job", output_dir="x")  # null before: added
        assert c["torch_threads"] == compose("train", overrides=["+torch_threads=2"]).torch_threads == 2


@pytest.mark.parametrize(
    "given,said",
    [
        # output_dir is where Hydra runs each job: set apart, the jobs' results would land away from their records
        ("output_dir=/tmp/elsewhere", "output_dir='/tmp/elsewhere' is invalid: is the folder Hydra runs the job in"),
        ("diagnostics=true,2", "diagnostics='2' is invalid: must be true or false"),
        ("hydra/launcher=processes hydra.launcher.n_jobs=0", "hydra.launcher.n_jobs=0 is invalid: must be -1"),
    ],
)
def test_what_only_the_command_line_shows_is_checked_for_each_job(tmp_path: Path, given: str, said: str) -> None:
    sweep = tmp_path / "s"
    proc = run_train("-m", *TINY, "seed=0,1", *given.split(), f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and said in last  # a job's value: the first job that gives it, named
    assert last.startswith("error: job ") == ("hydra.launcher" not in given)
    assert not sweep.exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # (Python's "Exception ignored")
def test_a_signal_ignored_inside_a_finalizer_still_stops_the_sweep(tmp_path: Path, monkeypatch) -> None:
    """The sweep's signal handler raises `Interrupted`; when the signal lands while a finished job's objects are
    collected (Lightning's Profiler.__del__), Python printed "Exception ignored" and the basic launcher ran the
    next job, and the sweep exited 0. Noted too: the next job stops before it trains, and a launch that returns
    all the same ends the sweep with 128 + signal."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from attnlab import errors
    from attnlab.errors import Interrupted
    from attnlab.signals import StopOnSignal
    from hydra_plugins.attnlab_sweeper import AttnlabSweeper

    monkeypatch.setattr(errors, "pending_signal", None)
    sweeper = AttnlabSweeper()
    sweeper.resuming, sweeper.config = False, OmegaConf.create({})

    class Collected:
        def __del__(self) -> None:  # the signal's handler runs here: its exception is ignored
            sweeper.on_signal(15, None)

    def launch(jobs: list, initial_job_idx: int) -> None:  # the signal during a job's cleanup, then no more jobs
        sweeper.deferred = 0
        Collected()

    sweeper.launcher = SimpleNamespace(launch=launch)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    assert sweeper.run_jobs(sweep, [["seed=0"]], ["seed=0"], 0.0) == 143
    assert errors.pending_signal == 15
    with pytest.raises(Interrupted, match="stopped by signal 15"):
        StopOnSignal(tmp_path / "next").__enter__()  # the next job, had there been one


@pytest.mark.parametrize(("given", "ends"), [([], "_sweep"), (["experiment=scaling"], "_scaling")])
def test_a_sweeps_folder_is_named_by_its_experiment(given: list[str], ends: str) -> None:
    """Without experiment= a sweep's folder ended in `_None`, which read like pos_enc=none."""
    import attnlab.naming  # noqa: F401  (registers the resolvers, as scripts/train.py's imports do)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [*given, "output_dir=x"], return_hydra_config=True)
    assert re.fullmatch(rf"outputs/multiruns/[\d-]+_[\d-]+{ends}", cfg.hydra.sweep.dir), cfg.hydra.sweep.dir
