"""Speed of attnlab against the same work written by hand (scripts/benchmark.py; its output: docs/benchmark.md).

Whole processes: the README's study (`python scripts/train.py -m experiment=limitations`) and one run, each against
`replay` of the folder it wrote, the same trainings by hand in one process. Per step: the seed loop (the seeds'
model by hand: explicit (L, L) attention, Adam, tensors), naive Lightning (that model, DataLoader(TensorDataset),
self.log every step) and attnlab's own path; long sequences: the seed loop against attnlab.
Each measurement is a fresh process (`python -m attnlab.bench step|replay ...`): its memory peak is its own and a
crash or out-of-memory becomes a table cell. Contestants take turns round after round: this machine's speed drifts.
This module imports torch, not Lightning: the hand-written replay must not pay for Lightning's import.
"""

import argparse
import itertools
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import linear_regression, median
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.config import run_config
from attnlab.errors import ArgumentParser, ConfigError, first_line
from attnlab.model import AttentionClassifier
from attnlab.provenance import code
from attnlab.run_folder import replacing
from attnlab.tasks import make_split, split_seed

ROOT = Path(__file__).resolve().parents[2]
SIZES = ("batch", "seq_len", "steps", "warmup", "window", "steps_per_epoch")  # of a per-step measurement
SHORT = {False: [(256, 32, 330, 30, 25, 100), (1024, 32, 130, 10, 20, 40)], True: [(64, 16, 40, 5, 5, 8)]}  # [quick]
# long sequences, one round: a warm-up step, then a window per step
LONG = {False: [(8, n, 5, 1, 1, 5) for n in (1024, 4096, 8192, 16384)], True: [(2, n, 5, 1, 1, 5) for n in (64, 128)]}
QUICK_TRAIN = ["data.n_train=256", "data.n_val=128", "data.n_test=128", "data.batch_size=64", "trainer.max_epochs=2"]
QUICK_STUDY = ["model.pos_enc=none,rope", "seed=0"]  # with QUICK_TRAIN: a handful of tiny jobs
# What a CPU measurement may use; its address space is limited to this plus 8 GB that torch reserves and never
# touches, this machine's 24 GB: an explicit (L, L) matrix that does not fit fails inside its own process
# instead of bringing the machine down.
MEMORY_LIMIT_GB = 16
OOM_MARKERS = ("can't allocate memory", "MemoryError", "out of memory")
Ends = list[tuple[int, float]]  # (epoch, time at the end of a step), one per step


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class SeedAttention(nn.Module):
    """The seeds' classifier as a user would write it: explicit attention, max-pool, linear head."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.embed = nn.Linear(1, d_model)
        self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)
        self.head = nn.Linear(d_model, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)  # (B, L, L)
        return self.head(self.out(weights @ v).amax(dim=1))


def epoch_steps(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, batch: int, bf16: bool) -> Iterator:
    """The steps of one epoch by hand, whole-tensor batches in a shuffled order: yields after each."""
    order = torch.randperm(len(x), device=x.device)
    for i in range(0, len(x), batch):
        idx = order[i : i + batch]
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield


def halfswap(spec: dict[str, Any]) -> tuple[Tensor, Tensor]:
    return make_split("halfswap", spec["batch"] * spec["steps_per_epoch"], spec["seq_len"], 1, seed=0)


# The contestants: each trains spec["steps"] steps, returning their Ends and the resident memory before training.
def seed_loop(spec: dict[str, Any]) -> tuple[Ends, float]:
    torch.manual_seed(0)
    model = SeedAttention(spec["d_model"]).to(spec["device"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = (t.to(spec["device"]) for t in halfswap(spec))
    baseline, ends = rss_mb(), []
    for epoch in itertools.count():
        for _ in epoch_steps(model, opt, x, y, spec["batch"], spec["bf16"]):
            if x.is_cuda:
                torch.cuda.synchronize()
            ends.append((epoch, time.perf_counter()))
            if len(ends) == spec["steps"]:
                return ends, baseline


def naive_lightning(spec: dict[str, Any]) -> tuple[Ends, float]:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from attnlab.timing import StepClock

    class Naive(SeedAttention, pl.LightningModule):
        def training_step(self, batch, batch_idx):
            loss = F.cross_entropy(self(batch[0]), batch[1])
            self.log("train_loss", loss, on_step=True, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(*halfswap(spec)), batch_size=spec["batch"], shuffle=True)
    clock = StepClock(synchronize=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            accelerator="gpu" if spec["device"].startswith("cuda") else "cpu",
            devices=1,
            max_steps=spec["steps"],
            precision="bf16-mixed" if spec["bf16"] else "32-true",
            callbacks=[clock],
            default_root_dir=tmp,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        baseline = rss_mb()
        trainer.fit(Naive(spec["d_model"]), loader)
    return clock.ends, baseline


def attnlab(spec: dict[str, Any]) -> tuple[Ends, float]:
    from hydra import compose, initialize_config_dir

    from attnlab.config import register_configs
    from attnlab.timing import StepClock
    from attnlab.train import train

    register_configs()
    batch, seq_len, epochs = spec["batch"], spec["seq_len"], math.ceil(spec["steps"] / spec["steps_per_epoch"])
    overrides = (
        f"data=halfswap model.pos_enc=sinusoidal model.d_model={spec['d_model']} model.max_len={seq_len} "
        f"data.seq_len={seq_len} data.batch_size={batch} data.n_train={batch * spec['steps_per_epoch']} "
        f"data.n_val={batch} data.n_test={batch} trainer.max_epochs={epochs} trainer.enable_progress_bar=false "
        f"trainer.accelerator={'gpu' if spec['device'].startswith('cuda') else 'cpu'} "
        f"trainer.precision={'bf16-mixed' if spec['bf16'] else '32-true'}"
    ).split()
    clock = StepClock(synchronize=True)
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", [f"output_dir={tmp}", *overrides])
        baseline = rss_mb()
        train(cfg, extra_callbacks=[clock])
    return clock.ends, baseline


CONTESTANTS = {"seed loop": seed_loop, "naive Lightning": naive_lightning, "attnlab": attnlab}


def samples_per_second(ends: Ends, batch_size: int, warmup: int, window: int) -> float | None:
    """Median samples/s over windows of `window` steps after `warmup`, none across epochs (validation, checkpoints)."""
    ends = ends[warmup:]
    pairs = [(ends[i], ends[i + window]) for i in range(0, len(ends) - window, window)]
    rates = [window * batch_size / (t1 - t0) for (e0, t0), (e1, t1) in pairs if e0 == e1 and t1 > t0]
    return median(rates) if rates else None


def step_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One per-step measurement, in this fresh process: its peaks are the contestant's."""
    cuda = spec["device"].startswith("cuda")
    if not cuda:  # CUDA reserves a huge virtual address space: an address-space limit would break it
        resource.setrlimit(resource.RLIMIT_AS, ((MEMORY_LIMIT_GB + 8) * 2**30, resource.RLIM_INFINITY))
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    ends, baseline_mb = CONTESTANTS[spec["who"]](spec)
    rss_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_peak_mb - baseline_mb
    speed = samples_per_second(ends, spec["batch"], spec["warmup"], spec["window"])
    return {"samples_per_s": speed, "steps": len(ends), "peak_mb": peak_mb}


def measure_step(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """`step_worker(spec)` in a fresh process; an error or out-of-memory becomes {"error": ...}."""
    cmd = [sys.executable, "-m", "attnlab.bench", "step", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode == 0:
        return json.loads(proc.stdout.splitlines()[-1])
    oom = proc.returncode == -9 or any(s in proc.stderr for s in OOM_MARKERS)
    return {"error": "out of memory" if oom else f"failed (exit {proc.returncode})"}


def step_rows(device: str, threads: int, rounds: int, quick: bool) -> list[dict[str, Any]]:
    """Rows {**spec, who, **its median round, speeds: all its rounds'}; the contestants of a row take turns."""
    turns = []  # (spec, contestants, rounds, timeout)
    for bf16 in [False, True] if device.startswith("cuda") else [False]:
        base = {"device": device, "d_model": 32, "threads": threads, "bf16": bf16}
        turns += [({**base, **dict(zip(SIZES, s, strict=True))}, list(CONTESTANTS), rounds, 300) for s in SHORT[quick]]
        long = {**base, "long": True}
        turns += [({**long, **dict(zip(SIZES, s, strict=True))}, ["seed loop", "attnlab"], 1, 240) for s in LONG[quick]]
    rows = []
    for spec, contestants, n, timeout in turns:
        sizes = f"B={spec['batch']:5} L={spec['seq_len']:6} bf16={spec['bf16']}"
        runs: dict[str, list[dict[str, Any]]] = {who: [] for who in contestants}
        for _, who in itertools.product(range(n), contestants):
            runs[who].append(measure_step({**spec, "who": who}, timeout))
            print(f"  {who:16} {sizes}: {runs[who][-1]}", file=sys.stderr)
        for who, results in runs.items():
            good = sorted((r for r in results if r.get("samples_per_s")), key=lambda r: r["samples_per_s"])
            median_round = good[len(good) // 2] if good else results[0]
            rows.append({**spec, "who": who, **median_round, "speeds": [r["samples_per_s"] for r in good]})
    return rows


def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int) -> float:
    with torch.no_grad():
        correct = sum((model(x[i : i + batch]).argmax(-1) == y[i : i + batch]).sum() for i in range(0, len(x), batch))
    return float(correct) / len(x)


def replay(folder: str | Path, device: str = "cpu") -> int:
    """The trainings of a finished run or sweep folder by hand, in this process, as PROCESSES_TEXT describes them;
    returns how many."""
    runs = sorted(p.parent for p in Path(folder).glob("**/metrics.json") if (p.parent / ".hydra").is_dir())
    for run in runs:
        cfg = run_config(run)
        seed, data_cfg, batch = cfg["seed"], cfg["data"], cfg["data"]["batch_size"]
        torch.manual_seed(seed)
        split = {}
        for s in ("train", "val", "test"):
            n, seq_len, dim = data_cfg[f"n_{s}"], data_cfg["seq_len"], data_cfg["dim"]
            x, y = make_split(data_cfg["task"], n, seq_len, dim, split_seed(s, seed, data_cfg["seed"]))
            split[s] = (x.to(device), y.to(device))
        model = AttentionClassifier(**cfg["model"]).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg["optim"]["lr"], weight_decay=cfg["optim"]["weight_decay"])
        best, best_state = -1.0, model.state_dict()
        for _ in range(json.loads((run / "metrics.json").read_text())["epochs"]):
            model.train()
            for _ in epoch_steps(model, opt, *split["train"], batch, bf16=False):
                pass
            model.eval()
            if (acc := accuracy(model, *split["val"], batch)) > best:
                best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        accuracy(model, *split["test"], batch)
    return len(runs)


# Where a study job's time goes (`job_parts`): each part timed around its calls, nested parts indented. Lightning's
# evaluation loop class is private: named here for measuring only.
PARTS = [  # (label, module, attributes)
    ("the job: attnlab.train.train", "attnlab.train", "train"),
    ("  fit: training, validation, checkpoints", "pytorch_lightning", "Trainer.fit"),
    ("    checkpoint saves", "pytorch_lightning", "Trainer.save_checkpoint"),
    ("    Lightning's self.log, each key", "pytorch_lightning", "LightningModule.log"),
    ("    the loggers' writes", "attnlab.dashboard", "TensorBoard.log_metrics"),
    ("  test of the best checkpoint", "pytorch_lightning", "Trainer.test"),
    ("  validation and test loops (in fit and test)", "pytorch_lightning.loops.evaluation_loop", "_EvaluationLoop.run"),
    ("  diagnostics: the shuffled pass", "attnlab.diagnostics", "AttentionDiagnostics.on_validation_batch_end"),
    ("  diagnostics: each epoch's statistics", "attnlab.diagnostics", "AttentionDiagnostics.on_validation_epoch_end"),
    ("  diagnostics: gradient norms", "attnlab.diagnostics", "AttentionDiagnostics.on_before_optimizer_step"),
    ("  diagnostics: the tested checkpoint's", "attnlab.diagnostics", "AttentionDiagnostics.on_test_epoch_start"),
    ("    of which its figures", "attnlab.diagnostics", "AttentionDiagnostics.log_figures"),
    ("  logger, Trainer, data, model; metrics.json", "attnlab.train", "make_logger make_trainer build record"),
]
PARTS_JOB = ["experiment=limitations", "data=halfswap", "model.pos_enc=sinusoidal", "seed=0"]  # 6 epochs


def job_parts(rounds: int, device: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Milliseconds each of PARTS took in one job of the study (PARTS_JOB and `overrides`, the device's; one thread, as
    a sweep's worker runs it), median over `rounds` runs in this process after one not counted, and the replay of the
    same training."""
    import contextlib
    import functools
    import importlib
    import io

    from hydra import compose, initialize_config_dir

    from attnlab import train
    from attnlab.config import register_configs

    spent: dict[str, float] = {}  # this run's seconds per part

    def timed(fn: Any, label: str) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - began

        return wrapper

    originals = []  # (owner, attribute, what it was): put back at the end
    for label, module, names in PARTS:
        for name in names.split():
            *path, attr = name.split(".")
            owner = functools.reduce(getattr, path, importlib.import_module(module))
            originals.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, timed(getattr(owner, attr), label))
    threads, hand = torch.get_num_threads(), "hand-written: attnlab.bench.replay"
    torch.set_num_threads(1)
    register_configs()
    ms: dict[str, list[float]] = {}
    try:
        for r in range(rounds + 1):
            spent.clear()
            with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
                cfg = compose("train", [f"output_dir={tmp}", *PARTS_JOB, *(overrides or [])])
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    epochs = train.train(cfg)["epochs"]
                (Path(tmp) / ".hydra").mkdir()  # (what `replay` finds a run by)
                began = time.perf_counter()
                replay(tmp, device)
                spent[hand] = time.perf_counter() - began
            if r:  # (the first run: a warm-up)
                for label, seconds in spent.items():
                    ms.setdefault(label, []).append(seconds * 1000)
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)
        torch.set_num_threads(threads)
    medians = {label: median(ms[label]) for label in [*(p[0] for p in PARTS), hand] if label in ms}
    return {"job": " ".join(PARTS_JOB), "epochs": epochs, "rounds": rounds, "ms": medians}


def wall(cmd: list[str]) -> float:
    """Seconds the whole process `cmd` took, start-up included; its failure stops the benchmark."""
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - began


def import_seconds(modules: str) -> float:
    """How old a fresh process is once `import <modules>` is done, on the clock of a run's start-up (process
    start to first step): the interpreter's own start counts on both sides."""
    from attnlab.timing import process_age  # here: it imports Lightning, which the hand-written replay must not

    code = f"import {modules}; print(open('/proc/self/stat').read().strip(), open('/proc/uptime').read(), sep='\\n')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    if (age := process_age(*proc.stdout.strip().splitlines()[-2:])) is None:
        raise RuntimeError(f"no process age from /proc: {proc.stdout[-500:]!r}")
    return age


def train_vs_replay(what: str, train_args: list[str], rounds: int, device: str) -> dict[str, Any]:
    """`python scripts/train.py <train_args>` against `replay` of the folder it wrote, whole processes in turns,
    `rounds` times; for a single run (no -m), its start-up and the import floor too."""
    sweep, command = train_args[:1] == ["-m"], ["python", "scripts/train.py", *train_args]
    print(f"{what}: {' '.join(command)}", file=sys.stderr)
    times: dict[str, list[float]] = {"attnlab": [], "hand-written": []}
    floor: dict[str, list[float]] = {"torch": [], "torch, pytorch_lightning": []}  # imports in a bare process
    startup = []
    for r in range(rounds):
        for modules in [] if sweep else floor:
            floor[modules].append(import_seconds(modules))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "out"
            where = f"hydra.{'sweep' if sweep else 'run'}.dir={folder}"
            times["attnlab"].append(wall([sys.executable, *command[1:], where]))
            times["hand-written"].append(wall([sys.executable, "-m", "attnlab.bench", "replay", str(folder), device]))
            metrics = list(folder.glob("**/metrics.json"))
            startup.append(json.loads(metrics[0].read_text())["startup_seconds"])
        print(f"  round {r + 1}: " + ", ".join(f"{who} {t[-1]:.1f} s" for who, t in times.items()), file=sys.stderr)
    seconds = {who: (median(t), min(t), max(t)) for who, t in times.items()}
    pairs = [h / a for a, h in zip(times["attnlab"], times["hand-written"], strict=True)]
    result = {"what": what, "command": " ".join(command), "jobs": len(metrics), "seconds": seconds, "rounds": rounds}
    result["pairs"] = (median(pairs), min(pairs), max(pairs))
    if not sweep:
        result |= {"imports_s": {modules: median(t) for modules, t in floor.items()}, "startup_s": median(startup)}
    return result


# docs/benchmark.md: the latest measurement of each kind, a section each; a run with `--out` replaces the sections it
# measured and keeps the others (`merge`). What the numbers mean, and the readings before: docs/performance.md.
TITLE = "# Benchmark: the latest output of `python scripts/benchmark.py`, section by section"
INTRO = """Each section is the latest measurement of its kind, with its command, its time and the commit it measured:
`--out` replaces the sections a run measures and keeps the others. What the numbers mean, every reading before and
what was tried: docs/performance.md."""
PROCESSES_HEAD = "## Whole processes"
PROCESSES_TEXT = """Wall time of the whole process, start-up included, against the same trainings written by hand
in one process (`attnlab.bench.replay`: each run's data, model and epochs; Adam, whole-tensor
batches, validation every epoch, test of the best weights; no logging, checkpoints or diagnostics).
The two take turns, round after round. `× hand-written` > 1: attnlab took less time; the ratio of the medians,
then, per round, the median (min–max) of each round's own ratio: the two ran back to back, so a drift of this
machine's speed cancels within a round.

| what | command | jobs | attnlab: s, median (min–max) | hand-written: s | × hand-written | per round | rounds |
|---|---|---|---|---|---|---|---|"""
STARTUP = """
Start-up, `python scripts/train.py` from process start to its first training step: {startup:.2f} s. The floor, \
on the same clock: a fresh `python -c "import torch, pytorch_lightning"` is {both:.2f} s old once they are imported \
(with torch alone {torch:.2f} s, which the hand-written run imports too; pytorch_lightning {pl:.2f} s more). \
attnlab's own start-up, Hydra's composition, the checks, the data, model, logger and Trainer: the other {own:.2f} s."""
PARTS_HEAD = "## Where a study job's time goes"
PARTS_TEXT = """One job of the study (`{job}`, {epochs} epochs), in one process after a job not counted, torch on
one thread as a sweep's worker runs it; each part timed around its calls, median of {rounds} runs (nested parts
indented; the evaluation loops and the diagnostics overlap fit and test: the rows add up to more than the job); then the
same training by hand.

| part | ms | of the job |
|---|---|---|"""
STEPS_HEAD = "## Per training step (d_model 32, 1 head, 1 layer)"
STEPS_TABLE = """\
| contestant | precision | batch | seq_len | samples/s | × seed loop | peak memory (MB) | rounds: min–max |
|---|---|---|---|---|---|---|---|"""
SECTIONS = (PROCESSES_HEAD, PARTS_HEAD, STEPS_HEAD)  # in the order the file shows them


def sections(text: str) -> dict[str, str]:
    """A benchmark output's sections: its `## ` headings -> the section's whole text, heading included."""
    found: dict[str, str] = {}
    for chunk in re.split(r"(?m)^(?=## )", text)[1:]:
        found[chunk.splitlines()[0].rstrip()] = chunk.rstrip() + "\n"
    return found


def merge(old: str | None, new: str) -> str:
    """The output file's text: `new`'s sections, and those of `old` (the file as it was) that `new` did not measure."""
    kept, measured = sections(old or ""), sections(new)
    body = [measured.get(heading) or kept.get(heading) for heading in SECTIONS]
    return "\n".join([TITLE, "", INTRO, "", *(b for b in body if b)])


def check_out(path: Path) -> str | None:
    """`--out`'s file as it is (None: not yet written), refused before anything is measured if it is not this script's
    output: its sections are kept, and anything else in it would be lost."""
    if path.is_dir() or not path.parent.is_dir():
        raise ConfigError("--out", str(path), "must name a file in a folder that exists")
    if not path.exists():
        return None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("--out", str(path), f"cannot be read ({type(e).__name__}: {first_line(e)})") from e
    if text.split("\n", 1)[0] != TITLE:
        why = f"is not an output of this script (its first line is not {TITLE!r}): give a new file, or one it wrote"
        raise ConfigError("--out", str(path), why)
    if others := [h for h in sections(text) if h not in SECTIONS]:
        why = f"holds a section this script does not write ({others[0]!r}), which would be lost: move it elsewhere"
        raise ConfigError("--out", str(path), why)
    return text


def fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def render(
    measured: str, rows: list[dict[str, Any]], processes: list[dict[str, Any]], parts: dict | None = None
) -> str:
    """This run's sections of docs/benchmark.md, each opened by `measured` (when, which commit, the command, the
    machine)."""
    lines = [TITLE, "", INTRO, ""]
    if processes:
        lines += [PROCESSES_HEAD, "", measured, "", PROCESSES_TEXT]
        for p in processes:
            a, h = p["seconds"]["attnlab"], p["seconds"]["hand-written"]
            spans = " | ".join(f"{m:.1f} ({lo:.1f}–{hi:.1f})" for m, lo, hi in (a, h))
            ratios = "{:.2f}× ({:.2f}–{:.2f}) | {}".format(*p["pairs"], p["rounds"])
            lines.append(f"| {p['what']} | `{p['command']}` | {p['jobs']} | {spans} | {h[0] / a[0]:.2f}× | {ratios} |")
        for p in [p for p in processes if "imports_s" in p]:  # a single run's start-up against the import floor
            both, alone, startup = p["imports_s"]["torch, pytorch_lightning"], p["imports_s"]["torch"], p["startup_s"]
            lines.append(STARTUP.format(startup=startup, both=both, torch=alone, pl=both - alone, own=startup - both))
        lines.append("")
    if parts:
        job = parts["ms"][PARTS[0][0]]  # the whole job
        lines += [PARTS_HEAD, "", measured, ""]
        lines.append(PARTS_TEXT.format(job=parts["job"], epochs=parts["epochs"], rounds=parts["rounds"]))
        for label, ms in parts["ms"].items():
            indent = "&nbsp;" * (len(label) - len(label.lstrip()))
            lines.append(f"| {indent}{label.strip()} | {ms:.0f} | {ms / job:.0%} |")
        lines.append("")
    if rows:
        lines += [STEPS_HEAD, "", measured, "", STEPS_TABLE]
        seed_loop = {}  # ratios against the seed loop at the same batch, length and precision
        for r in rows:
            key, speed, speeds = (r["batch"], r["seq_len"], r["bf16"]), r.get("samples_per_s"), r.get("speeds", [])
            if r["who"] == "seed loop" and speed:
                seed_loop[key] = speed
            ratio = f"{fmt(speed / seed_loop[key])}×" if speed and key in seed_loop else "–"
            spread = f"{fmt(min(speeds))}–{fmt(max(speeds))} ({len(speeds)})" if len(speeds) > 1 else "–"
            lines.append(
                f"| {r['who']} | {'bf16-mixed' if r['bf16'] else 'fp32'} | {r['batch']} | {r['seq_len']} | "
                f"{r.get('error') or fmt(speed)} | {ratio} | {fmt(r.get('peak_mb'))} | {spread} |"
            )
        long = [r for r in rows if r.get("long")]
        fused = [
            (r["seq_len"], r["peak_mb"]) for r in long if r["who"] == "attnlab" and not r["bf16"] and "peak_mb" in r
        ]
        if len(fused) >= 2:
            slope, intercept = linear_regression(*zip(*fused, strict=True))
            points = ", ".join(f"{n}: {mb:.0f} MB" for n, mb in fused)
            lines.append(
                f"\nattnlab peak memory vs seq_len (fp32, batch {long[0]['batch']}): {points}; least-squares fit "
                f"{intercept:.0f} MB + {slope * 1024:.1f} MB per 1024 positions."
            )
        lines.append("")
    return "\n".join(lines)


def measured_line(command: str, began: float, source: tuple[str | None, bool | None], machine: str) -> str:
    """When (start–end, local time), which commit and whether its code had changes (`source`: attnlab.provenance.code()
    as the measurements began) and what: a section's first line."""
    commit, dirty = source
    which = "no git checkout" if commit is None else f"commit {commit[:7]}" + (" with changes" if dirty else "")
    start, end = time.strftime("%Y-%m-%d %H:%M", time.localtime(began)), time.strftime("%H:%M")
    span = start if start.endswith(end) else f"{start}–{end}"
    return f"Measured {span} ({which}): `{command}`. {machine}"


def main() -> None:
    examples = """examples:
  python scripts/benchmark.py                      # everything (CPU: ~20 minutes on 2 cores)
  python scripts/benchmark.py --only processes     # the study (with and without diagnostics) and one run
  python scripts/benchmark.py --only parts --rounds 7   # where one study job's time goes (~30 s)
  python scripts/benchmark.py --device cuda        # on a GPU: adds bf16 mixed precision rows
  python scripts/benchmark.py --quick --out /tmp/bench.md   # tiny sizes: checks that it runs"""
    doc = __doc__.split("\nEach measurement")[0]  # what is measured; not how the module is built
    parser = ArgumentParser(description=doc, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (adds bf16-mixed rows)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--only", choices=["processes", "parts", "steps"], help="one part of the benchmark")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per step measurement (0: default)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of each comparison")
    parser.add_argument("--out", type=Path, help="also write it to this file: its sections replace theirs there")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds={args.rounds}: at least 1 (each part is a median over the rounds)")
    try:
        if args.out:
            check_out(args.out)  # refused now, not after the measurements
    except ConfigError as e:
        parser.error(str(e))
    began, source = time.time(), code()  # the commit measured, read before the measurements
    cuda, quick, rounds = args.device.startswith("cuda"), args.quick, 1 if args.quick else args.rounds
    on_device = ["trainer=gpu"] if cuda else []
    run = [*on_device, *(QUICK_TRAIN if quick else [])]
    study = ["-m", "experiment=limitations", *run, *(QUICK_STUDY if quick else [])]
    # the study again without the diagnostics (figures, statistics, shuffled accuracy), which the replay does not do
    bare = ("study, diagnostics=false", [*study, "diagnostics=false"])
    jobs = [] if args.only in ("steps", "parts") else [("study", study), bare, ("one run", run)]
    processes = [train_vs_replay(what, train_args, rounds, args.device) for what, train_args in jobs]
    parts = job_parts(rounds, args.device, on_device) if args.only in (None, "parts") else None
    rows = [] if args.only in ("processes", "parts") else step_rows(args.device, args.threads, rounds, quick)
    machine = (
        f"Machine: {os.uname().machine}, {os.cpu_count()} CPU cores, "
        f"{torch.cuda.get_device_name() if cuda else 'no GPU'}; torch {torch.__version__}, "
        f"threads {args.threads or torch.get_num_threads()}."
    )
    command = " ".join(["python scripts/benchmark.py", *sys.argv[1:]])
    text = render(measured_line(command, began, source, machine), rows, processes, parts)
    print(text)
    if args.out:
        try:  # read again: another benchmark may have written its sections there meanwhile
            before = check_out(args.out)
        except ConfigError as e:
            parser.error(f"{e} (the output above was not written)")
        with replacing(args.out) as tmp:  # (a kill leaves the file as it was)
            tmp.write_text(merge(before, text))


if __name__ == "__main__":  # the workers: python -m attnlab.bench step '<spec json>' | replay <folder> [device]
    workers = {"step": lambda spec: step_worker(json.loads(spec)), "replay": replay}
    print(json.dumps(workers[sys.argv[1]](*sys.argv[2:])))
