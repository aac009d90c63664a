import re
from pathlib import Path

import pytest

from nanogpt_lib.config import ConfigError, TrainConfig, load_config, parse_overrides
from nanogpt_lib.model import GPTConfig

ROOT = Path(__file__).resolve().parents[1]


def test_default_toml_is_the_builtin_default_and_the_seed_model():
    cfg = load_config(ROOT / "configs" / "default.toml")
    assert cfg == TrainConfig()
    assert (cfg.model.n_embd, cfg.model.block_size, cfg.model.n_head, cfg.model.n_layer) == (128, 64, 4, 4)


def test_openwebtext_toml_loads():
    cfg = load_config(ROOT / "configs" / "openwebtext.toml")
    assert cfg.dataset == "openwebtext" and cfg.model == TrainConfig().model


def test_training_defaults_are_the_measured_winners_and_a_bare_model_config_is_gpt2():
    cfg = TrainConfig()
    assert (cfg.model.pos, cfg.model.mlp, cfg.optimizer, cfg.lr, cfg.muon_lr) == ("rope", "relu2", "muon", 2e-3, 0.02)
    assert load_config(None, ["model.n_layer=2"]).model.pos == "rope"  # a partial [model] keeps the winners
    gpt2 = load_config(None, ["model.pos=learned", "model.mlp=gelu", "optimizer=adamw"])
    assert gpt2.model == GPTConfig() and (GPTConfig().pos, GPTConfig().mlp) == ("learned", "gelu")


def test_the_two_named_models_are_the_recipe_and_gpt2():
    assert GPTConfig.recipe() == TrainConfig().model and GPTConfig.gpt2() == GPTConfig()
    assert GPTConfig.recipe(n_layer=2, mlp="gelu") == GPTConfig(n_layer=2, pos="rope", mlp="gelu")  # overrides win
    assert GPTConfig.gpt2(n_layer=2) != GPTConfig.recipe(n_layer=2)
    older = {k: v for k, v in GPTConfig.recipe().to_dict().items() if k not in ("pos", "mlp")}
    assert GPTConfig.from_dict(older) == GPTConfig.gpt2()  # a config.json from before the switches is GPT-2


def test_overrides_are_typed():
    cfg = load_config(None, ["lr=3e-4", "model.n_layer=6", "compile=true", "name=x", "max_steps=10"])
    assert cfg.lr == 3e-4 and isinstance(cfg.lr, float)
    assert cfg.model.n_layer == 6 and cfg.compile is True and cfg.name == "x" and cfg.max_steps == 10


def test_unknown_key_lists_valid_keys():
    with pytest.raises(
        ConfigError, match=r"unknown config key\(s\) learning_rate; valid keys: name, dataset.*model.n_layer"
    ):
        load_config(None, ["learning_rate=1"])
    with pytest.raises(ConfigError, match=r"unknown config key.*model\.layers"):
        load_config(None, ["model.layers=2"])


def test_wrong_types():
    with pytest.raises(ConfigError, match="max_steps expects int, got 'lots'"):
        load_config(None, ["max_steps=lots"])
    with pytest.raises(ConfigError, match=re.escape("model.dropout expects float")):
        load_config(None, ["model.dropout=high"])
    with pytest.raises(ConfigError, match="compile expects bool"):
        load_config(None, ["compile=maybe"])


def test_toml_types_checked(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('max_steps = "ten"\n')
    with pytest.raises(ConfigError, match="max_steps expects int"):
        load_config(path)
    path.write_text("max_steps = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_invalid_values():
    with pytest.raises(ConfigError, match="invalid value for batch_size"):
        load_config(None, ["batch_size=0"])
    with pytest.raises(ConfigError, match="dtype must be"):
        load_config(None, ["dtype=int8"])
    with pytest.raises(ConfigError):
        load_config(None, ["model.n_embd=30", "model.n_head=4"])  # not divisible


def test_override_syntax():
    assert parse_overrides(["a=1", "model.b=2"]) == {"a": "1", "model": {"b": "2"}}
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["lr"])


def test_round_trip_dict():
    cfg = load_config(None, ["model.n_layer=2", "lr=0.01"])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("key", ["lr", "muon_lr", "weight_decay", "grad_clip", "beta2"])
def test_non_finite_hyperparameters_are_refused(key, value):
    """nan passes `lr > 0 is False`-style checks in neither direction, and inf passes most: both are refused."""
    with pytest.raises(ConfigError, match=f"{key} must be a finite number, got {value}"):
        load_config(None, [f"{key}={value}"])


def test_out_of_range_optimizer_settings_are_refused():
    for bad in ("beta1=1.0", "beta2=-0.1", "muon_momentum=1", "weight_decay=-0.1"):
        with pytest.raises(ConfigError, match=f"invalid value for {bad.split('=')[0]}"):
            load_config(None, [bad])


@pytest.mark.parametrize("name", ["/tmp/x", "../x", "a/b", "a\\b", "..", ".", "", "   ", "x\0y"])
def test_a_run_name_must_be_a_plain_folder_name(name):
    with pytest.raises(ConfigError, match="name must be a plain folder name"):
        load_config(None, [f"name={name}"])
    with pytest.raises(ConfigError, match="name must be a plain folder name"):
        TrainConfig(name=name)


def test_plain_run_names_are_accepted():
    for name in ("default", "run-1", "lr_3e-4", "a.b", "..hidden-ish"):
        assert load_config(None, [f"name={name}"]).name == name
