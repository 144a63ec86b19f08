"""Every config composes; typos, wrong types and unknown names fail at compose time; validate() catches the rest."""

import itertools

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from attnlab.config import to_plain, validate
from attnlab.errors import ConfigError
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


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.d_modle=64", "d_modle"),
        ("model.d_model=abc", "d_model"),
        ("model.pos_enc=rotory", "rotory"),
        ("model.scale=cubic", "cubic"),
        ("data=halfswp", "halfswp"),
        ("seed=zero", "seed"),
    ],
)
def test_bad_overrides_fail_at_compose_time(compose_cfg, override: str, message: str) -> None:
    with pytest.raises((ConfigCompositionException, ValidationError), match=message):
        compose_cfg(override)


def test_added_key_is_refused(compose_cfg) -> None:
    """`+key=value` slips past the schema at compose time (Hydra opens the struct); validate refuses it."""
    with pytest.raises(ConfigError, match=r"^model.d_modle=64 .*unknown key; model has \['d_model'"):
        validate(to_plain(compose_cfg("+model.d_modle=64")))
    with pytest.raises(ConfigError, match=r"^lr=0.1 .*unknown key"):
        validate(to_plain(compose_cfg("+lr=0.1")))


def test_unknown_name_lists_the_valid_ones(compose_cfg) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg("model.pos_enc=rotory")
    text = str(info.value) + str(info.value.__cause__)
    assert "sinusoidal" in text and "learned" in text


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.seq_len=0", "data.seq_len"),
        ("data.dim=-1", "data.dim"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.n_train=0", "data.n_train"),
        ("optim.lr=0", "optim.lr"),
        ("model.num_heads=0", "model.num_heads"),
        ("model.num_layers=0", "model.num_layers"),
        ("model.num_heads=3", "model.d_model"),
        ("seed=-1", "seed"),
        ("seed=4294967296", "seed"),
        ("trainer.accelerator=tpu9", "trainer.accelerator"),
    ],
)
def test_validate_names_the_key(compose_cfg, override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}="):
        validate(to_plain(compose_cfg(override)))


def test_halfswap_odd_and_learned_max_len(compose_cfg) -> None:
    with pytest.raises(ConfigError, match=r"data.seq_len=33 .*even"):
        validate(to_plain(compose_cfg("data=halfswap", "data.seq_len=33")))
    with pytest.raises(ConfigError, match=r"data.seq_len=64 .*max_len=32"):
        validate(to_plain(compose_cfg("model.pos_enc=learned", "model.max_len=32", "data.seq_len=64")))
