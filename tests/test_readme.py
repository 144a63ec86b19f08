"""Every command of README.md runs, so the README cannot rot.

The commands are taken from its ```bash blocks and run as written, from the project root, with
the minimum of changes: tiny sizes and output folders under a temporary directory are appended
to training commands; placeholders (`<run>`, `<sweep>`) become a real run and sweep; hardware this
machine lacks is swapped for what it has (a GPU for the CPU, 4 GPUs for 2 CPU processes); the SLURM
command runs on a real one-node SLURM started here (tests/local_slurm.sh), or, where SLURM is not
installed, on submitit's local launcher, a study's grid is cut to a few jobs, and the benchmark
runs `--quick`.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab import run_folder

from .conftest import ROOT, TINY, python, run_train, start_local_slurm, stop_local_slurm

README = ROOT / "README.md"


def readme_commands() -> list[str]:
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()  # drop trailing comments
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def test_readme_opens_with_the_quickstart_and_ci_runs_its_test_command() -> None:
    commands = readme_commands()
    assert commands[:2] == ["make train", ". .venv/bin/activate"]  # then study, results, curves, resume
    assert commands[6] == "make test"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def adapt(command: str, tmp: Path, run: Path, sweep: Path, n: int, slurm: bool = False) -> str | None:
    """The README command, made runnable here (see the module docstring); None to skip."""
    if command in ("make test", ". .venv/bin/activate"):
        return None  # CI runs `make test` itself; activating only sets PATH, which the test does
    for placeholder, real in {
        # a sweep job's folder as a sweep prints it (`=` and `,` in it: tests/test_evaluate.py); here the base sweep's
        "outputs/multiruns/<sweep>/data=halfswap,pos_enc=rope,seed=0": str(sweep / "seed=0"),
        "$PWD/outputs/runs/<run>": str(run),
        "outputs/runs/<run>": str(run),
        "<run_dir>": str(run),
        "outputs/multiruns/<sweep>": str(sweep),
        "<sweep dir>": str(sweep),
        "path/to/file.ckpt": str(run / "checkpoints" / "last.ckpt"),
        " outputs/attention.png": f" {tmp / 'attention.png'}",
    }.items():
        command = command.replace(placeholder, real)
    if not torch.cuda.is_available():
        command = command.replace("trainer=gpu", "trainer=cpu").replace("trainer.precision=bf16-mixed", "")
        command = command.replace(
            "trainer=ddp trainer.devices=4", "trainer=ddp trainer.accelerator=cpu trainer.devices=2"
        )
    if not slurm:  # no SLURM here: the same sweep as local processes
        command = command.replace("hydra/launcher=slurm", "hydra/launcher=submitit_local")
        command = re.sub(r"hydra\.launcher\.partition=\S+", "", command)
    command = command.replace("tensorboard --logdir outputs", f"tensorboard --inspect --logdir {tmp}")
    command = re.sub(r"^tensorboard --logdir ", "tensorboard --inspect --logdir ", command)  # no server here
    if command.startswith("python scripts/benchmark.py"):
        command += f" --quick --out {tmp / 'bench.md'}"
    tiny = " ".join(TINY)
    if "experiment=" in command:  # a study's grid, cut to a handful of jobs (the grids: test_sweeps.py)
        tiny += " seed=0 data=halfswap model.pos_enc=rope model.scale=sqrt model.d_model=8"
    if command.startswith("python scripts/train.py") and "--config-path" not in command:
        if "resume=" not in command:
            where = f"hydra.sweep.dir={tmp / f'sweep{n}'}" if " -m " in command else f"hydra.run.dir={tmp / f'run{n}'}"
            command += f" {where}"
        command += f" {tiny}"
        # A run from a checkpoint, and a finished run resumed, train only when given more epochs than the base run
        # has: n, the command's place, grows with each such command (a resume lengthens the base run).
        if "ckpt_path=" in command or ("resume=" in command and " -m " not in command):
            command += f" trainer.max_epochs={n + 2}"
    elif "--config-path" in command:
        command = re.sub(r"hydra\.run\.dir=\S+", f"hydra.run.dir={tmp / f'run{n}'}", command)
    elif command.startswith("make "):
        target = command.split()[1]
        where = f"hydra.sweep.dir={tmp / f'sweep{n}'}" if target == "sweep" else f"hydra.run.dir={tmp / f'run{n}'}"
        command += f' ARGS="{tiny} {where}"' if target in ("train", "sweep") else ""
    return command


@pytest.fixture
def slurm_env(tmp_path_factory: pytest.TempPathFactory):
    """A local SLURM cluster's environment for the README's SLURM command, or None without SLURM."""
    where = tmp_path_factory.mktemp("slurm")
    env = start_local_slurm(where)
    yield env
    if env is not None:
        stop_local_slurm(where, env)


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path: Path, slurm_env) -> None:
    # <run>: the run the quickstart's first command (`make train`) trains, as the README has it; <sweep>: a
    # sweep of two jobs, trained first (a study's, cut to a job, has no job folder like the README's)
    commands = readme_commands()
    assert commands[0] == "make train" and "<run>" not in commands[0]
    run, sweep = tmp_path / "run0", tmp_path / "base_sweep"
    proc = run_train("-m", *TINY, "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # `python SCRIPT.py` and make's $(PY) SCRIPT.py run by the tests' warm server (conftest.python)
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    warm = shlex.join(python())
    shim.write_text(f'#!/bin/sh\ncase "$1" in *.py) exec {warm} "$@";; esac\nexec {shlex.quote(sys.executable)} "$@"\n')
    shim.chmod(0o755)
    path = f"{shim.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**(slurm_env or os.environ), "PATH": path, "MAKEFLAGS": f"PY={shim}", "PYTHONWARNINGS": "ignore"}
    skipped, wrote = [], []
    for n, original in enumerate(commands):
        command = adapt(original, tmp_path, run, sweep, n, slurm=slurm_env is not None)
        if command is None:
            skipped.append(original)
            continue
        if original.startswith("make "):
            assert shlex.split(original)[1] in (ROOT / "Makefile").read_text()
        proc = subprocess.run(
            command, shell=True, executable="/bin/bash", cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, f"README command failed: {original}\nran: {command}\n{proc.stderr[-3000:]}"
        if original.startswith("python scripts/benchmark.py"):  # both parts of the table, as make benchmark has it
            table = (tmp_path / "bench.md").read_text()
            assert "| study |" in table and "| one run |" in table and "The floor" in table, table
            assert "| seed loop |" in table and "| naive Lightning |" in table and "| attnlab |" in table, table
        # a command that trains did train: its run (or every job of its sweep) finished with results
        for folder in (tmp_path / f"run{n}", *sorted((tmp_path / f"sweep{n}").glob("*/.hydra/.."))):
            if folder.exists() and "resume=" not in original:
                assert run_folder.status(folder) == ("ok", ""), (original, folder)
                wrote.append(original)
    # nothing skipped but the two commands CI and the test's own PATH stand for
    assert sorted(set(skipped)) == [". .venv/bin/activate", "make test"], skipped
    assert len(set(wrote)) >= 10, wrote
