"""Names given and read: sweep jobs' folders, Hydra quoting, a run's key settings, dotted keys, one spelling."""

import hashlib
import json
import re
from typing import Any

from omegaconf import OmegaConf

# A run's key settings, name -> config key: metrics.json's `settings`, a run's HParams row, the report's columns.
# The budget is among them: what "chance" or "learned" was reached with.
KEY_SETTINGS = {key.rpartition(".")[2]: key for key in (  # each named by its last part
    "data.task", "model.pos_enc", "data.seq_len", "data.dim", "model.scale", "model.pool", "model.d_model",
    "model.num_heads", "model.num_layers", "optim.lr", "data.n_train", "data.batch_size", "trainer.max_epochs",
    "early_stop.patience", "seed",
)}  # fmt: skip


def safe_dirname(name: str) -> str:
    """One path component whatever the values: '/', NUL and '%' percent-encoded, a name of dots prefixed."""
    name = re.sub(r"[/\x00%]", lambda m: f"%{ord(m.group()):02X}", name)
    return f"_{name}" if set(name) <= {"."} else name


def job_dirname(overrides: str, limit: int = 200) -> str:
    """A sweep job's folder: its overrides (`data=halfswap,seed=1`); past `limit`, cut and hashed."""
    if not overrides:
        return "job"
    overrides = safe_dirname(overrides)  # values like ../../x stay inside the sweep
    if len(overrides) <= limit:
        return overrides
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:10]
    return f"{overrides[: limit - 13]}.._{digest}"  # 13 = len(".._") + 10


NOT_IN_JOB_NAMES = ("experiment", "resume")  # the sweep folder's name says the first; the second is set on resume


def varying_keys(jobs: list[list[str]]) -> tuple[list[dict[str, str]], list[str]]:
    """Each job's overrides as {key: value}, and the keys whose values differ between the jobs."""
    parsed = [dict(o.lstrip("+~").split("=", 1) for o in job if "=" in o) for job in jobs]
    keys = dict.fromkeys(k for job in parsed for k in job)
    return parsed, [k for k in keys if len({job.get(k) for job in parsed}) > 1]


def job_names(jobs: list[list[str]]) -> list[str]:
    """Short folder names: the values that vary between the jobs, by the key's last part where unambiguous
    (`data=halfswap,pos_enc=rope,seed=1`), so that TensorBoard's run list tells them apart at a glance."""
    parsed, varying = varying_keys(jobs)
    if len(jobs) == 1:
        varying = list(parsed[0])
    varying = [k for k in varying if k not in NOT_IN_JOB_NAMES]
    tails = [k.rsplit(".", 1)[-1] for k in varying]
    short = {k: t if tails.count(t) == 1 else k for k, t in zip(varying, tails, strict=True)}
    return [job_dirname(",".join(f"{short[k]}={job[k]}" for k in varying if k in job)) for job in parsed]


# conf/train.yaml's hydra.sweep.subdir and hydra.sweep.dir (the experiment's name; "sweep" without one, not
# "None", which read like pos_enc=none); registered on import: launchers' workers resolve them too.
OmegaConf.register_new_resolver("attnlab_job_dir", job_dirname, replace=True)
OmegaConf.register_new_resolver("attnlab_sweep_name", lambda experiment: experiment or "sweep", replace=True)


def hydra_quote(value: str) -> str:
    """A value Hydra's override parser takes verbatim (paths with '=', ',', spaces, quotes, backslashes). Hydra reads
    a backslash as an escape only before a quote, before `${` and at the end: only those are doubled."""
    escape = {"'": "\\'", "${": "\\${", "": ""}
    return "'" + re.sub(r"(\\*)('|\$\{|\Z)", lambda m: m[1] * 2 + escape[m[2]], value) + "'"


def quote_paths(argv: list[str], keys: tuple[str, ...]) -> list[str]:
    """`key=<path>` of these keys quoted for Hydra, so that a path is taken as printed: a sweep job's folder
    (`data=halfswap,seed=1`) is no valid override value otherwise. Left as given: a value quoted already, and in
    a sweep (-m) one without '=', whose commas sweep over paths."""
    sweep = "-m" in argv or "--multirun" in argv

    def quoted(arg: str) -> str:
        key, _, value = arg.partition("=")
        if key.lstrip("+") not in keys or value[:1] in ("'", '"') or (sweep and "=" not in value):
            return arg
        return f"{key}={hydra_quote(value)}"

    return [argv[0], *map(quoted, argv[1:])]


def lookup(cfg: dict[str, Any], key: str) -> Any:
    """The value at a dotted key (`model.pos_enc`) of a plain config; None where there is none."""
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def canonical(value: Any) -> str:
    """One spelling of a plain value whatever its keys' order: equal values, equal spellings."""
    return json.dumps(value, sort_keys=True, default=str)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        flat.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return flat
