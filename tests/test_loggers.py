"""The logger= config group: each logger gets the scalars and the HParams row; a bad name fails before anything
runs."""

from __future__ import annotations

import csv
import importlib.util

import pytest
import yaml

from attnlab.config import to_plain, validate
from attnlab.errors import ConfigError
from attnlab.loggers import LOGGERS
from attnlab.naming import KEY_SETTINGS

from .conftest import CONF, TINY, read_metrics


def test_every_logger_has_a_config_file() -> None:
    assert sorted(p.stem for p in (CONF / "logger").glob("*.yaml")) == sorted(LOGGERS.names())


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
    tested = metrics["tested_checkpoint"]  # the test's numbers at its step, and named beside them
    assert [int(r["step"]) for r in rows if r.get("test/acc")] == [tested["global_step"]]
    hparams = yaml.safe_load((tmp_path / "csv" / "hparams.yaml").read_text())
    assert set(hparams) == {*KEY_SETTINGS, "tested_checkpoint"} - {"patience"}  # (null: left out)
    assert hparams["seq_len"] == 8  # real types
    assert (
        hparams["tested_checkpoint"] == f"checkpoints/best.ckpt, epoch {tested['epoch']}, step {tested['global_step']}"
    )
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # TensorBoard only when chosen
    assert read_metrics(tmp_path)["test/acc"] == metrics["test/acc"]


def test_a_resumed_csv_run_keeps_its_earlier_rows(compose_cfg, tmp_path) -> None:
    """Lightning's CSV writer deletes metrics.csv when it starts; a resume keeps the rows from before its
    checkpoint (and drops what the first attempt logged after it: here its test)."""
    from attnlab.train import train

    first = train(compose_cfg(*TINY, "logger=csv"))
    second = train(compose_cfg(*TINY, "logger=csv", "trainer.max_epochs=2", "resume=true"))
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    val = [(int(r["step"]), float(r["val/acc"])) for r in rows if r.get("val/acc")]
    assert [s for s, _ in val] == [3, 7] and val[0][1] == pytest.approx(first["history"]["val/acc"][0])
    tested = second["tested_checkpoint"]["global_step"]  # the first attempt's test (at step 4) is gone
    assert [int(r["step"]) for r in rows if r.get("test/acc")] == [tested]
    assert [int(r["step"]) for r in rows if r.get("hparams/test/acc")] == [tested]


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
        tested = metrics["tested_checkpoint"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test/acc")] == [tested["global_step"]]
        assert run.data.params["tested_checkpoint"].endswith(f"epoch {tested['epoch']}, step {tested['global_step']}")
    else:
        (offline,) = (tmp_path / "wandb").glob("offline-run-*")
        assert list(offline.glob("*.wandb"))  # the run's record, for `wandb sync`


def test_an_unknown_logger_fails_before_training(compose_cfg) -> None:
    with pytest.raises(ConfigError, match=r"logger.name='neptune' is invalid: expected one of \['tensorboard', 'csv'"):
        validate(to_plain(compose_cfg("logger.name=neptune")))
