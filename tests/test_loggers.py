"""logger= and callbacks= config groups: each logger gets the scalars and the HParams row; callbacks
are Lightning's own, checked against their signatures before anything runs."""

from __future__ import annotations

import csv
import importlib.util

import pytest
import yaml

from attnlab.config import to_plain, validate
from attnlab.dashboard import HPARAMS
from attnlab.errors import ConfigError
from attnlab.loggers import CALLBACKS, LOGGERS

from .conftest import CONF, TINY, read_metrics


def test_every_logger_and_callback_has_a_config_file() -> None:
    assert sorted(p.stem for p in (CONF / "logger").glob("*.yaml")) == sorted(LOGGERS.names())
    assert sorted(p.stem for p in (CONF / "callbacks").glob("*.yaml")) == sorted(CALLBACKS.names())


def test_csv_logger_gets_the_scalars_and_the_hparams_row(compose_cfg, tmp_path) -> None:
    from attnlab.train import train

    metrics = train(compose_cfg(*TINY, "trainer.max_epochs=2", "logger=csv"))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    val = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    assert len(val) == 2 and max(float(r["val/acc_best"]) for r in rows if r.get("val/acc_best")) == pytest.approx(
        metrics["val/acc_best"]
    )
    final = [r for r in rows if r.get("hparams/test/acc")]
    assert [float(r["hparams/test/acc"]) for r in final] == [pytest.approx(metrics["test/acc"])]
    hparams = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert set(hparams) == set(HPARAMS) and hparams["seq_len"] == 8 and hparams["task"] == "uniform"  # real types
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # TensorBoard only when chosen
    assert read_metrics(tmp_path)["test/acc"] == metrics["test/acc"]


def test_a_resumed_csv_run_keeps_its_earlier_rows(compose_cfg, tmp_path) -> None:
    """Lightning's CSV writer deletes metrics.csv when it starts; a resume keeps the rows from before its
    checkpoint (and drops what the first attempt logged after it: here its test)."""
    from attnlab.train import train

    first = train(compose_cfg(*TINY, "logger=csv"))
    train(compose_cfg(*TINY, "logger=csv", "trainer.max_epochs=2", "resume=true"))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    val = [(int(r["step"]), float(r["val/acc"])) for r in rows if r.get("val/acc")]
    assert [s for s, _ in val] == [3, 7] and val[0][1] == pytest.approx(first["history"]["val/acc"][0])
    assert [int(r["step"]) for r in rows if r.get("test/acc")] == [8]  # the first attempt's test (step 4) is gone


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_optional_loggers_log_offline(name, compose_cfg, tmp_path, monkeypatch) -> None:
    if importlib.util.find_spec(name) is None:
        with pytest.raises(ConfigError, match=rf"logger.name=.*{name}.*needs the {name} package: pip install"):
            validate(to_plain(compose_cfg(f"logger={name}")))
        pytest.skip(f"{name} is not installed (pip install -e '.[{name}]'); checked that it is refused early")
    from attnlab.train import train

    monkeypatch.chdir(tmp_path)  # mlflow's store: outputs/mlruns under the working directory
    monkeypatch.setenv("WANDB_SILENT", "true")
    metrics = train(compose_cfg(*TINY, f"logger={name}"))
    if name == "mlflow":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=(tmp_path / "outputs" / "mlruns").resolve().as_uri())
        (run,) = client.search_runs([client.get_experiment_by_name("attnlab").experiment_id])
        assert run.data.params["seq_len"] == "8" and run.data.params["pos_enc"] == "none"
        assert run.data.metrics["hparams/test/acc"] == pytest.approx(metrics["test/acc"])
        assert "val/acc" in run.data.metrics
    else:
        (offline,) = (tmp_path / "wandb").glob("offline-run-*")
        assert list(offline.glob("*.wandb"))  # the run's record, for `wandb sync`


def test_early_stopping_callback_stops_on_val_acc(compose_cfg) -> None:
    from attnlab.train import train

    # No gain in accuracy reaches min_delta=1.0: the first epoch sets the best, the second one stops.
    stop = ["callbacks=early_stopping", "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=1.0"]
    metrics = train(compose_cfg(*TINY, "trainer.max_epochs=10", *stop))
    assert metrics["epochs"] == 2 and metrics["ended_by"] == "early_stopping on val/acc"
    assert not metrics["stopped_early"]  # the val/loss rule (early_stop.patience) did not end it
    assert len(metrics["history"]["val/acc"]) == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["callbacks=early_stopping", "+callbacks.early_stopping.patiense=3"],
            r"callbacks.early_stopping=.* is invalid: .*unexpected keyword argument 'patiense'; EarlyStopping takes",
        ),
        (["+callbacks.swa={}"], r"callbacks='swa' is invalid: expected one of \['early_stopping', 'timer'\]"),
        (["logger.name=neptune"], r"logger.name='neptune' is invalid: expected one of \['tensorboard', 'csv'"),
    ],
)
def test_bad_logger_or_callback_fails_before_training(overrides, message, compose_cfg) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(to_plain(compose_cfg(*overrides)))


def test_a_callback_that_refuses_without_a_message_is_named_by_its_error(compose_cfg, monkeypatch) -> None:
    """An error with an empty message (a bare `assert`) is still one line naming the key, not an IndexError."""

    class Refuses:
        def __init__(self, monitor: str, mode: str, patience: int, min_delta: float) -> None:
            raise ValueError()  # what a bare `assert` gives outside pytest

    monkeypatch.setattr("attnlab.loggers.callback_class", lambda name: Refuses)
    cfg = compose_cfg("callbacks=early_stopping", "callbacks.early_stopping.patience=5")
    with pytest.raises(ConfigError, match=r"^callbacks.early_stopping=\{.*\} is invalid: ValueError$"):
        validate(to_plain(cfg))
