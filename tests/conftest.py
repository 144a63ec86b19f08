"""Shared fixtures: configs composed exactly as scripts/train.py composes them, and the CLI runner."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

# Before torch is imported: the two pytest workers (`make test`) share the two cores, so one torch
# thread each, in every process they start too. Two threads each oversubscribe the cores, and OpenMP's
# busy-waiting then makes these tiny models run several times slower. (Threads change no test's answer.)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from attnlab.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TRAIN = ROOT / "scripts" / "train.py"

register_configs()

# `make test` gives its two workers whole files (--dist loadfile), in collection order: the longest
# files go first, so that no worker is left alone with a long one at the end (`--durations`, measured).
LONGEST_FIRST = ("test_readme.py", "test_benchmark.py", "test_nothing_lost.py", "test_slurm.py", "test_chaos.py",
                 "test_sweeps.py", "test_study_view.py", "test_reliability.py", "test_science.py")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


# Small and quick, for tests that train: a few batches of short sequences, no progress bar, no diagnostics (the
# tested checkpoint's figures cost more than such a training).
TINY = [
    "data.n_train=256",
    "data.n_val=128",
    "data.n_test=128",
    "data.batch_size=64",
    "data.seq_len=8",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "diagnostics=false",  # attention statistics and figures: tests that read them set diagnostics=true
]


def compose_train(output_dir: Path | str, *overrides: str) -> DictConfig:
    """The config scripts/train.py composes from `overrides`, writing to `output_dir`: for `train(cfg)`
    in this process, where a process of its own would prove nothing more."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[f"output_dir={output_dir}", *overrides])


def save_record(run_dir: Path, cfg: DictConfig) -> dict:
    """A run's records as a run from the command line leaves them: Hydra's .hydra/config.yaml and attnlab's
    config.json (the config resolved, `output_dir` the folder); returns the plain config."""
    from omegaconf import OmegaConf

    from attnlab import run_folder
    from attnlab.config import to_plain

    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    plain = to_plain(cfg, str(run_dir))
    run_folder.write_json_atomic(run_dir / run_folder.CONFIG, plain)
    return plain


def refused_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`python scripts/train.py ARGS` (a single run, not `-m`), which must be refused before Hydra writes
    anything, in this process: its argv rewritten (`resume=<run>`: attnlab.resume.resume_argv), the config
    Hydra composes from it, and the on_run_start callbacks Hydra calls then (conf/train.yaml: the run's
    checks and the claim of its folder). Asserts the exit code the process would have (1); returns what it
    said on stderr. For the checks, where a process of its own would prove nothing more (that Hydra calls
    them before it writes into the run: a test that starts one)."""
    from hydra.utils import instantiate

    from attnlab import run_folder
    from attnlab.resume import resume_argv

    capsys.readouterr()
    cfg = None
    try:
        with pytest.raises(SystemExit) as exited:
            argv = resume_argv([str(TRAIN), *args])
            assert "-m" not in argv and "--multirun" not in argv, "a sweep's checks run in Hydra's multirun"
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                cfg = compose("train", overrides=argv[1:], return_hydra_config=True)
            for callback in cfg.hydra.callbacks.values():  # as Hydra calls them, in their order
                instantiate(callback).on_run_start(config=cfg)
    finally:
        if cfg is not None:  # a folder claimed (not refused): let it go
            run_folder.release(Path(str(cfg.hydra.run.dir)))
    err = capsys.readouterr().err
    assert exited.value.code == 1, err
    return err


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_cfg("data=halfswap", ...) -> the config train.py would get, writing under tmp_path."""
    return lambda *overrides: compose_train(tmp_path, *overrides)


# The environment the tests run the command line in (a test adds to it).
CLI_ENV = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}


@functools.cache
def warm_server() -> Path:
    """This pytest worker's warm server (tests/warm.py), started at its first use; its socket."""
    import atexit
    import shutil
    import tempfile

    socket_path = Path(tempfile.mkdtemp(prefix="attnlab-warm-")) / "socket"
    command = [sys.executable, "-m", "tests.warm", str(socket_path)]
    with (socket_path.parent / "server.log").open("w") as log:  # its own errors: not in some test's captured output
        server = subprocess.Popen(command, cwd=ROOT, env=CLI_ENV, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    atexit.register(shutil.rmtree, socket_path.parent, ignore_errors=True)
    atexit.register(server.kill)  # (atexit: last registered, first run)
    return socket_path


def signalled_after_imports(script: list[str], sig: str, cwd: Path | None = None) -> tuple[int, list[str]]:
    """`python SCRIPT ARGS` in a fresh interpreter, sent `sig` once torch is imported (the import report says when:
    no sleep stands in for the event); its exit code and what it said on stderr."""
    env = {**CLI_ENV, "PYTHONPROFILEIMPORTTIME": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([*python(cold=True), *script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    for line in proc.stderr:
        if line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == "torch":
            break
    os.kill(proc.pid, signal.Signals[sig])
    said = [line for line in proc.stderr.read().splitlines() if not line.startswith("import time:")]
    return proc.wait(timeout=600), said


def python(cold: bool = False) -> list[str]:
    """The command that runs `python SCRIPT ARGS` for a test: a process of its own, forked from a server
    that has done the imports already (tests/warm.py); python itself until the server answers. `cold`:
    python itself, for a test about the start-up (its timing, the imports, what a fresh interpreter holds)
    or one that SIGKILLs the process and acts at once."""
    if cold:
        return [sys.executable]
    return [sys.executable, "-S", str(ROOT / "tests" / "warm_run.py"), str(warm_server())]


def run_train(
    *args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None, cold: bool = False
) -> subprocess.CompletedProcess[str]:
    """`python scripts/train.py ARGS` in a process of its own (`python(cold)`), from `cwd` (its outputs/
    lands there); `env`: variables to add."""
    return subprocess.run(
        [*python(cold), str(TRAIN), *args], cwd=cwd, env={**CLI_ENV, **(env or {})}, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def train_cli(tmp_path: Path) -> Callable[..., tuple[subprocess.CompletedProcess[str], Path]]:
    """Run scripts/train.py into a fresh run folder; returns (process, run folder)."""
    counter = iter(range(10**6))

    def _run(
        *args: str, env: dict[str, str] | None = None, cold: bool = False
    ) -> tuple[subprocess.CompletedProcess[str], Path]:
        run_dir = tmp_path / f"run{next(counter)}"
        return run_train(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path, env=env, cold=cold), run_dir

    return _run


def schema_args(section: type, **overrides: object) -> dict:
    """A config section's defaults from the schema (attnlab.config), as plain values, with overrides:
    the arguments of the class the section builds (ModelConfig -> AttentionClassifier, ...)."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.to_container(OmegaConf.structured(section), resolve=False, enum_to_str=True)
    return {**defaults, **overrides}  # type: ignore[dict-item]


def model_args(**overrides: object) -> dict:
    from attnlab.config import ModelConfig

    return schema_args(ModelConfig, **{"dim": 1, **overrides})  # dim: data.dim's default


def data_args(**overrides: object) -> dict:
    from attnlab.config import DataConfig

    return schema_args(DataConfig, **{"task": "uniform", **overrides})  # task: no default in the schema


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


class ServedRun:
    """A TensorBoard run as TensorBoard's server reads it (its Python loader: plugin_event_accumulator), every
    event file in order, with the server's purge of what a resumed run logged again; nothing sampled away. Read
    through the legacy accessors (`Tags()["scalars"]`, `Scalars`, `Images`, `Tensors`): the legacy
    EventAccumulator purges differently from the server, so it would hide what a user sees."""

    def __init__(self, tb_dir: Path) -> None:
        from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

        self.acc = EventAccumulator(str(tb_dir), size_guidance={"tensors": 0})
        self.acc.Reload()

    def Tags(self) -> dict[str, list[str]]:
        plugin = {tag: self.acc.SummaryMetadata(tag).plugin_data.plugin_name for tag in self.acc.Tags()["tensors"]}
        scalars = [t for t, p in plugin.items() if p == "scalars"]
        images = [t for t, p in plugin.items() if p == "images"]
        return {"scalars": scalars, "images": images, "tensors": [t for t in plugin if t not in scalars + images]}

    def Scalars(self, tag: str) -> list:
        from tensorboard.util.tensor_util import make_ndarray

        return [SimpleNamespace(step=e.step, value=float(make_ndarray(e.tensor_proto))) for e in self.acc.Tensors(tag)]

    def Images(self, tag: str) -> list:  # an image summary's tensor: width, height, then the PNG
        return [
            SimpleNamespace(step=e.step, width=int(w), height=int(h), encoded_image_string=png)
            for e in self.acc.Tensors(tag)
            for w, h, png in [e.tensor_proto.string_val]
        ]

    def Tensors(self, tag: str) -> list:
        return self.acc.Tensors(tag)

    def PluginTagToContent(self, plugin: str) -> dict[str, bytes]:
        return self.acc.PluginTagToContent(plugin)


def tensorboard_run(tb_dir: Path) -> ServedRun:
    return ServedRun(tb_dir)


def scalar_values(tb_dir: Path, tag: str) -> list[float]:
    acc = tensorboard_run(tb_dir)
    return [e.value for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def scalar_steps(tb_dir: Path, tag: str) -> list[int]:
    acc = tensorboard_run(tb_dir)
    return [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def image_steps(tb_dir: Path, tag: str) -> list[int]:
    acc = tensorboard_run(tb_dir)
    return [e.step for e in acc.Images(tag)] if tag in acc.Tags()["images"] else []


def processes() -> list[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process on this machine, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            found.append((int(stat.parent.name), parent, (stat.parent / "cmdline").read_bytes()))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def running_in_groups(groups: set[int], wait: float = 120) -> list[str]:
    """Command lines of the processes of the process groups `groups` (sweeps started with
    `start_new_session=True`: each is its group's leader) that still run, once they have had up to `wait`
    seconds to go: a sweep's worker notices its sweep's death within a second, a resource tracker when its
    pipe closes. A zombie (state Z) runs nothing: it stays only where PID 1 does not reap orphans."""
    import time

    def running() -> list[str]:
        found = []
        for pid, _, command in processes():
            try:
                state, _, group = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if int(group) in groups and state != "Z":
                found.append(command.replace(b"\0", b" ").decode(errors="replace")[:120])
        return found

    deadline = time.monotonic() + wait
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    return running()


def start_local_slurm(where: Path) -> dict[str, str] | None:
    """A one-node SLURM on this machine (tests/local_slurm.sh), as the environment that reaches it
    (SLURM_CONF set), or None where SLURM is not installed or this is not root. Stop it with
    `stop_local_slurm(where, env)`."""
    import shutil

    if any(shutil.which(b) is None for b in ("munged", "slurmctld", "slurmd", "sbatch")) or os.geteuid() != 0:
        return None
    up = subprocess.run([str(ROOT / "tests" / "local_slurm.sh"), "up", str(where)], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    return {**os.environ, "SLURM_CONF": str(where / "slurm.conf"), "PYTHONWARNINGS": "ignore"}


def stop_local_slurm(where: Path, env: dict[str, str]) -> None:
    subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
    subprocess.run([str(ROOT / "tests" / "local_slurm.sh"), "down", str(where)], capture_output=True, timeout=120)
