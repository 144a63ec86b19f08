"""Every config composes; typos, wrong types and unknown names fail at compose time; validate() catches the rest."""

import itertools
import re
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from attnlab.config import check_overrides, to_plain, validate
from attnlab.errors import ConfigError
from attnlab.naming import canonical
from attnlab.resume import check_start_checkpoint
from attnlab.train import build

from .conftest import CONF


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "data,model,trainer",
    list(itertools.product(group_options("data"), group_options("model"), group_options("trainer"))),
)
def test_every_config_composes_and_builds(compose_cfg, data: str, model: str, trainer: str) -> None:
    overrides = [f"data={data}", f"model={model}", f"trainer={trainer}"]
    if trainer == "gpu":
        pytest.importorskip("torch").cuda.is_available() or pytest.skip("no GPU here")
    c = to_plain(compose_cfg(*overrides))
    validate(c)
    _datamodule, _module = build(c)
    assert c["data"]["task"] == data


def test_yaml_names_match_the_schema(compose_cfg) -> None:
    c = to_plain(compose_cfg("data=halfswap", "model.pos_enc=learned", "model.scale=none"))
    assert (c["data"]["task"], c["model"]["pos_enc"], c["model"]["scale"]) == ("halfswap", "learned", "none")
    assert isinstance(c["model"]["pos_enc"], str)


# Every refused value, checked as the CLI checks it (compose, then the checks of attnlab.resume.preflight),
# in-process; tests/test_reliability.py::test_bad_input_is_one_clear_line runs a few through the CLI.
# Compose-time refusals (typos, types, unknown names) carry Hydra's message; the rest one ConfigError line.
BAD = [
    (["data=halfswp"], "Could not find 'data/halfswp'"),
    (["experiment=limitatons"], "Could not find 'experiment/limitatons'"),
    (["debug=fdrr"], "Could not find 'debug/fdrr'"),
    (["logger=tensorbord"], "Could not find 'logger/tensorbord'"),
    (["model.pos_enc=rotory"], "Invalid value 'rotory', expected one of [none, sinusoidal, learned, rope, relative"),
    (["model.scale=cubic"], "Invalid value 'cubic'"),
    (["model.d_modle=64"], "Key 'd_modle' not in 'ModelConfig'"),
    (["model.d_model=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    (["seed=zero"], "Value 'zero' of type 'str' could not be converted to Integer"),
    (["+model.d_modle=64"], "model.d_modle=64 is invalid: unknown key; model has ['d_model'"),
    (["+lr=0.1"], "lr=0.1 is invalid: unknown key; the top level has"),
    (["data.seq_len=0"], "data.seq_len=0 is invalid: must be > 0"),
    (["data.dim=-2"], "data.dim=-2 is invalid: must be > 0"),
    (["data.batch_size=0"], "data.batch_size=0 is invalid: must be > 0"),
    (["data.n_train=0"], "data.n_train=0 is invalid: must be > 0"),
    (["data.n_test=0"], "data.n_test=0 is invalid: must be > 0"),
    # one sequence holds one class: the attention figures (which draw one of each) were skipped, said wrongly
    (["data.n_val=1"], "data.n_val=1 is invalid: must be an integer >= 2: a sequence of each class"),
    (["optim.lr=-0.1"], "optim.lr=-0.1 is invalid: must be > 0"),
    (["optim.lr=inf"], "optim.lr=inf is invalid: must be a finite number > 0"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1.0 is invalid: must be a finite number >= 0"),
    (["optim.weight_decay=nan"], "optim.weight_decay=nan is invalid: must be a finite number >= 0"),
    (["model.num_heads=0"], "model.num_heads=0 is invalid: must be > 0"),
    (["model.num_layers=0"], "model.num_layers=0 is invalid: must be > 0"),
    (["model.dim=3"], "model.dim=3 is invalid: must equal data.dim=1 (its default, ${data.dim})"),
    (["model.num_heads=5"], "model.d_model=32 is invalid: must be divisible by model.num_heads=5"),
    (["model.pos_enc=rope", "model.d_model=12", "model.num_heads=4"], "model.d_model=12 is invalid: rope"),
    (["data=halfswap", "data.seq_len=31"], "data.seq_len=31 is invalid: halfswap needs an even length"),
    (["model.pos_enc=learned", "model.max_len=16"], "data.seq_len=32 is invalid: pos_enc=learned has model.max_len=16"),
    (["seed=4294967296"], "seed=4294967296 is invalid: must be in 0..2**32-1"),
    (["seed=-1"], "seed=-1 is invalid: must be in 0..2**32-1"),
    (["model.d_model=${nope}"], "model.d_model='${nope}' is invalid: cannot be resolved"),
    (["data.seq_len=???"], "data.seq_len='???' is invalid: is not set (???)"),
    (["ckpt_path=/nonexistent.ckpt"], "ckpt_path='/nonexistent.ckpt' is invalid: no such checkpoint file"),
    (
        ["trainer.accelerator=tpu9"],
        "trainer.accelerator='tpu9' is invalid: Lightning refuses it: You selected an invalid accelerator name",
    ),
    (
        ["trainer.precision=17"],
        "trainer.precision='17' is invalid: must be of type Union[Literal[64, 32, 16], Literal['transformer-engine'",
    ),
    (
        ["trainer.deterministic=maybe"],
        "trainer.deterministic='maybe' is invalid: must be of type Union[bool, Literal['warn']",
    ),
    (
        ["trainer.strategy=ddp_bogus"],
        "trainer.strategy='ddp_bogus' is invalid: Lightning refuses it: You selected an invalid strategy",
    ),
    (["trainer.devices=0"], "trainer.devices=0 is invalid: Lightning refuses it: `Trainer(devices=0)` value is not"),
    (["torch_threads=-1"], "torch_threads=-1 is invalid: must be null (PyTorch's default) or an integer"),
    (["torch_threads=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 is invalid: must be an integer >= 1"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch=0 is invalid: must be an integer >= 1"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1.0 is invalid: must be null (no clipping)"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 is invalid: must be null (all)"),
    (["trainer.limit_val_batches=0"], "trainer.limit_val_batches=0 is invalid: must be null (all)"),
    (["trainer.limit_train_batches=nan"], "trainer.limit_train_batches=nan is invalid: must be null (all)"),
    (["trainer.limit_val_batches=1.5"], "trainer.limit_val_batches=1.5 is invalid: Lightning refuses it: You have"),
    (
        ["trainer.profiler=../x"],
        "trainer.profiler='../x' is invalid: Lightning refuses it: When passing string value for the `profiler`",
    ),
    (["+trainer.max_stepz=5"], "trainer.max_stepz=5 is invalid: pytorch_lightning.Trainer has no such argument"),
    (["+trainer.logger=false"], "trainer.logger=False is invalid: is set by attnlab; use logger=<name>"),
    (["progress=fancy"], "progress='fancy' is invalid: expected one of ['auto', 'rich', 'tqdm', 'plain']"),
    (["early_stop.patience=0"], "early_stop.patience=0 is invalid: must be null (train all max_epochs) or an"),
    # values checked by value, not only by name: each refused before anything runs or is written
    (["trainer.max_time=garbage"], "trainer.max_time='garbage' is invalid: must be null (no limit) or DD:HH:MM:SS"),
    (["trainer.max_time=00:00:00:00"], "trainer.max_time='00:00:00:00' is invalid: must be null (no limit) or DD:HH:"),
    (["trainer.limit_val_batches=inf"], "trainer.limit_val_batches=inf is invalid: must be null (all), an integer"),
    (["+trainer.max_steps=0"], "trainer.max_steps=0 is invalid: must be -1 (no limit) or an integer >= 1"),
    (["trainer.check_val_every_n_epoch=3", "trainer.max_epochs=2"], "check_val_every_n_epoch=3 is invalid: must be <="),
    (["torch_threads=100000"], "torch_threads=100000 is invalid: must be null (PyTorch's default) or an integer in"),
    (["logger=mlflow", "logger.project="], "logger.project='' is invalid: must name mlflow's experiment"),
    (["logger=wandb", "logger.save_dir=/dev/null/x"], "logger.save_dir='/dev/null/x' is invalid: cannot be created"),
    (["logger=csv", "logger.save_dir=/x"], "logger.save_dir='/x' is invalid: is mlflow's and wandb's; csv writes"),
    (["logger.save_dir=/tmp/x"], "logger.save_dir='/tmp/x' is invalid: is mlflow's and wandb's; tensorboard writes"),
    (["+trainer.callbacks=[]"], "trainer.callbacks=[] is invalid: is set by attnlab; use early_stop.patience or"),
    (["+trainer.max_steps=abc"], "trainer.max_steps='abc' is invalid: must be of type int"),
    (
        ["trainer.limit_train_batches=0.01"],  # Lightning's own refusal came once training had begun
        "trainer.limit_train_batches=0.01 is invalid: is none of the 32 train batches of an epoch; give at least 0.03",
    ),
    (["data.n_test=64", "trainer.limit_test_batches=0.5"], "trainer.limit_test_batches=0.5 is invalid: is none of"),
    (["+trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 is invalid: must be an integer >= 1"),
    (
        ["+trainer.val_check_interval=100"],
        "trainer.val_check_interval=100 is invalid: must be 1..32, the training batches",
    ),
    # accepted before, and then silently meant something else (validation after every batch; min_epochs ignored;
    # Lightning's "all" is only -1; bf16 run while the record says 16; 99 minutes)
    (["+trainer.val_check_interval=0.0"], "trainer.val_check_interval=0.0 is invalid: must be 1..32, the training"),
    (["+trainer.val_check_interval=0.01"], "is invalid: must be 1..32, the training batches of an epoch, or a fract"),
    (["+trainer.min_epochs=5", "trainer.max_epochs=2"], "trainer.min_epochs=5 is invalid: must be <= trainer.max_epo"),
    (["+trainer.num_sanity_val_steps=-5"], "trainer.num_sanity_val_steps=-5 is invalid: must be an integer >= -1"),
    (["trainer.precision=16", "trainer.accelerator=cpu"], "trainer.precision='16' is invalid: 16-bit mixed precision"),
    # its processes' training does not come back to the run's: metrics.json recorded 0 epochs and the final weights
    (["trainer.strategy=ddp_spawn"], "trainer.strategy='ddp_spawn' is invalid: trains in processes whose record of"),
    # a resolver's value: the run would train, and its record then be refused by resume and evaluate
    (["logger.project=${oc.env:HOME}"], "logger.project='${oc.env:HOME}' is invalid: ${oc.env:HOME}... would run"),
    (["progress=rich", "trainer.enable_progress_bar=false"], "progress='rich' is invalid: shows nothing with trainer"),
    (["trainer.max_time=00:00:99:99"], "trainer.max_time='00:00:99:99' is invalid: must be null (no limit) or DD:HH"),
    (["+trainer.barebones=true"], "trainer.barebones=True is invalid: is set by attnlab; use nothing: it turns off"),
    (["+trainer.num_nodes=2"], "trainer.num_nodes=2 is invalid: needs a cluster that starts a process on each node"),
    (
        ["eval.seq_lens=[64]", "model.pos_enc=learned"],
        "eval.seq_lens=64 is invalid: untrained positions: pos_enc=learned",
    ),
    (["eval.untrained=maybe"], "eval.untrained='maybe' is invalid: expected one of ['refuse', 'skip', 'mark']"),
    (["eval.seq_lens=[0]"], "eval.seq_lens=0 is invalid: lengths must be integers > 0"),
    (["data.seq_len=10000000"], "data.seq_len=10000000 is invalid: needs about 5645.8 GiB of memory, and"),
    (["eval.seq_lens=[1000000000]"], "eval.seq_lens=1000000000 is invalid: needs about"),
    (["~seed"], "seed=None is invalid: must be set; the schema requires it (~seed deleted it)"),
    # (OmegaConf reads these as true: the command line is checked before it composes them)
    (["diagnostics=2"], "diagnostics='2' is invalid: must be true or false"),
    (["verbose=yes"], "verbose='yes' is invalid: must be true or false"),
    (["trainer.enable_progress_bar=0"], "trainer.enable_progress_bar='0' is invalid: must be true or false"),
    # it named a sweep's job folder that its own jobs.json then refused, and reached terminals raw
    (["logger.project=a\tb"], "logger.project='a\\tb' is invalid: holds a control character (a tab, an escape"),
]  # fmt: skip
if not torch.cuda.is_available():
    BAD.append((["trainer=gpu"], "trainer.accelerator='gpu' is invalid: no CUDA GPU is visible here; use"))


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_refused_with_the_key_value_and_what_is_allowed(compose_cfg, overrides, message) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError, ConfigError)) as info:
        check_overrides(overrides)
        c = to_plain(compose_cfg(*overrides))
        validate(c)
        check_start_checkpoint(c)
    text = str(info.value) + str(info.value.__cause__ or "")
    assert message in text, text
    if isinstance(info.value, ConfigError):
        assert "\n" not in str(info.value)  # one line


def test_an_errors_one_line_shows_control_characters_escaped() -> None:
    """A key or a reason from a record (an unknown key named with a terminal's escape sequence, a message quoting
    a value) was printed raw: the terminal ran the sequence, and a newline broke the one line."""
    from attnlab.errors import one_line

    said = [
        str(ConfigError("trainer.\x1b]0;T\x07x", 1, "not in 'TrainConfig'\nnext")),
        one_line(RuntimeError("\x1b[2J")),
    ]
    assert said == ["trainer.\\x1b]0;T\\x07x=1 is invalid: not in 'TrainConfig'\\nnext", "RuntimeError: \\x1b[2J"]


def test_text_of_any_script_is_taken_and_control_characters_refused() -> None:
    """A value, given now or saved in a record: a no-break or ideographic space and the joiner inside an emoji are
    text a keyboard types (str.isprintable refused them, in a first version); DEL, the C1 controls and a
    bidirectional override are refused as an escape is."""
    from attnlab.resume import check_saved_override

    for value in ("'fam👨\u200d👩\u200d👧'", "'実験\u3000A'", "'a\u00a0b'", "'café ☕'"):
        check_overrides([f"logger.project={value}"])
        check_saved_override(f"logger.project={value}", Path("overrides.yaml"))
    for value in ("'a\x7fb'", "'a\x9b2Jb'", "'a\u202eb'", "'a\x1bb'"):
        with pytest.raises(ConfigError, match="holds a control character"):
            check_overrides([f"logger.project={value}"])
        with pytest.raises(ConfigError, match="no control characters"):
            check_saved_override(f"logger.project={value}", Path("overrides.yaml"))


def test_true_or_false_is_taken_as_hydra_writes_it() -> None:
    check_overrides(["diagnostics=true", "verbose=False", "trainer.enable_model_summary='true'", "seed=2"])


@pytest.mark.parametrize("extra", ["+trainer.min_epochs=null", "+trainer.min_epochs=2", "+trainer.min_steps=null"])
def test_a_trainer_argument_lightning_allows_passes_the_checks(compose_cfg, extra) -> None:
    validate(to_plain(compose_cfg(extra)))  # None: Lightning's own default for these


def test_a_config_file_that_is_not_yaml_is_one_line(tmp_path) -> None:
    from attnlab.config import check_yaml_files

    from .conftest import CONF

    check_yaml_files(CONF)  # the project's own parse
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "typo.yaml").write_text("data:\n  n_train: [1, 2\nb: : :\n")
    with pytest.raises(ConfigError) as info:
        check_yaml_files(tmp_path)
    assert str(info.value) == (
        f"config file='{tmp_path / 'experiment' / 'typo.yaml'}:3:2' is invalid: not valid YAML: expected ',' or ']', "
        "but got ':'"
    )


def test_a_dotted_trainer_key_is_no_argument_without_asking_lightning(monkeypatch) -> None:
    import attnlab.config

    def lightning(*_):  # importing Lightning for a name that cannot be an argument: a slower refusal
        raise AssertionError("Lightning's signature was read")

    monkeypatch.setattr(attnlab.config, "trainer_arguments", lightning)
    assert not attnlab.config.trainer_argument("trainer.foo.bar")


def test_rope_beside_a_cls_token_counts_the_scores_it_materialises(compose_cfg) -> None:
    """At 8,000 positions the fused kernel's rope run fits this machine; beside a cls token rope takes the explicit
    path, whose (B, H, L, L) scores (65 GB at batch 256) do not."""
    from attnlab.config import check_memory

    for pool, fits in (("max", True), ("cls", False)):
        c = to_plain(compose_cfg("data=halfswap", "model.pos_enc=rope", f"model.pool={pool}"))
        try:
            check_memory("data.seq_len", 10240, 8000, 256, c["data"], c["model"])
        except ConfigError as e:
            assert not fits and "needs about" in str(e), (pool, e)
        else:
            assert fits, pool


def test_what_a_resume_may_change_and_a_report_never_groups_by_is_declared_on_the_schema() -> None:
    """The kinds on the schema's fields: a resume may change the budget, the display, the device and what is
    scored after training, nothing the checkpoints hold; a report groups by anything but the display."""
    from attnlab.report import NOT_SETTINGS
    from attnlab.resume import RESUMABLE

    display = {"trainer.enable_progress_bar", "trainer.enable_model_summary", "torch_threads", "verbose", "progress"}
    budget = {"trainer.max_epochs", "trainer.max_time", "early_stop.patience", "early_stop.min_delta",
              "trainer.max_steps"}  # fmt: skip
    scored_after = {"eval.seq_lens", "eval.n", "eval.batch_size", "eval.untrained"}
    assert set(RESUMABLE) == display | budget | scored_after | {"trainer.accelerator"}
    assert set(NOT_SETTINGS) == display | {"seed", "model.dim", "output_dir", "resume"}


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=halfswap"],
        ["data=uniform", "model.pos_enc=rope", "model.pool=cls", "eval.seq_lens=[16,32]", "eval.n=64",
         "+trainer.max_steps=5", "trainer.limit_train_batches=0.5", "trainer.max_time=00:00:01:00",
         "optim.lr=1e-5", "data.n_test=${data.n_val}", "logger.project=x${seed}y", "logger.save_dir='12'",
         "trainer.devices=[0]", "trainer.deterministic=warn", "early_stop.patience=3"],
        # the user's references, read as OmegaConf reads them (converted to the field's type, an escape kept)
        ["logger.project=${seed}", "optim.lr=${data.seq_len}", "early_stop.min_delta=${seed}",
         "data.n_test=${eval.seq_lens.0}", "eval.seq_lens=[64,${data.seq_len}]", "trainer.precision=\\${seed}"],
    ],
    ids=["defaults", "every-kind-of-value", "references"],
)  # fmt: skip
def test_a_saved_config_reads_back_as_it_was_trained(tmp_path, overrides: list[str]) -> None:
    """run_config reads a run's config.json back as the run had it: the same values, of the same types, references
    resolved, output_dir the folder."""
    from attnlab.config import run_config

    from .conftest import compose_train, save_record

    run = tmp_path / "run${seed}"  # (a folder's name is no reference)
    cfg = compose_train(run, *overrides)
    cfg.output_dir = "${hydra:runtime.output_dir}"  # as conf/train.yaml has it
    expected = save_record(run, cfg)
    read = run_config(run)
    assert canonical(read) == canonical(expected)  # (JSON: 1 and 1.0 differ)
    assert read["output_dir"] == str(run) and read["model"]["dim"] == read["data"]["dim"] == 1


def test_a_run_folder_without_its_config_json_says_what_it_is(tmp_path: Path) -> None:
    """A run stopped before it wrote config.json (or one of an earlier version) was called "not a run folder"."""
    from attnlab.config import run_config

    (tmp_path / ".hydra").mkdir()
    said = f"{tmp_path / 'config.json'} is missing or not a file: the run stopped before it trained, or is of an"
    with pytest.raises(ConfigError, match=re.escape(said)):
        run_config(tmp_path)
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError, match=re.escape(said)):
        run_config(tmp_path)


def test_an_errors_one_line_stays_short_whatever_the_value() -> None:
    """A crafted record's value of a megabyte was printed whole in the "one line"."""
    said = str(ConfigError("data.extra", "x" * 10_000, "unknown key"))
    assert said == f"data.extra='{'x' * 299}... (10,002 characters) is invalid: unknown key"
