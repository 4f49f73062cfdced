import json

import pytest

from mmjax import config as config_lib
from mmjax.config import Config, ConfigError

REPO_EXPERIMENTS = config_lib.Path(__file__).resolve().parents[1] / "experiments"


def test_overrides_are_parsed_to_the_field_type():
    cfg = Config()
    config_lib.override(cfg, "train.batch_size=48")
    config_lib.override(cfg, "optim.learning_rate=3e-4")
    config_lib.override(cfg, "model.image.pool=mean")
    config_lib.override(cfg, "eval.recall_at=1,2,3")
    assert cfg.train.batch_size == 48 and isinstance(cfg.train.batch_size, int)
    assert cfg.optim.learning_rate == pytest.approx(3e-4)
    assert cfg.model.image.pool == "mean"
    assert cfg.eval.recall_at == (1, 2, 3)


def test_unknown_key_names_the_key_and_the_closest_valid_one():
    with pytest.raises(ConfigError, match=r"'train.batchsize'.*did you mean 'train.batch_size'"):
        config_lib.override(Config(), "train.batchsize=3")
    with pytest.raises(ConfigError, match=r"'optim.lr'"):
        config_lib.override(Config(), "optim.lr=3")


def test_a_section_is_not_a_settable_key():
    with pytest.raises(ConfigError, match="unknown config key 'train'"):
        config_lib.override(Config(), "train=3")


def test_bad_value_names_key_and_type():
    with pytest.raises(ConfigError, match=r"'train.num_steps' expects int, got 'ten'"):
        config_lib.override(Config(), "train.num_steps=ten")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        config_lib.override(Config(), "train.num_steps")


def test_json_round_trip_and_strict_read(tmp_path):
    cfg = Config()
    config_lib.override(cfg, "model.text.depth=5")
    config_lib.save(cfg, tmp_path / "config.json")
    assert config_lib.read(tmp_path / "config.json") == cfg

    data = json.loads((tmp_path / "config.json").read_text())
    data["model"]["text"]["detph"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"'model.text.detph'.*'model.text.depth'"):
        config_lib.read(tmp_path / "bad.json")

    data = json.loads((tmp_path / "config.json").read_text())
    data["train"]["num_steps"] = "many"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"'train.num_steps' expects int"):
        config_lib.read(tmp_path / "bad.json")


def test_experiment_file_loads_with_overrides():
    cfg = config_lib.load(REPO_EXPERIMENTS / "tiny_cpu.py", ["train.num_steps=7"])
    assert cfg.name == "tiny_cpu" and cfg.train.num_steps == 7


def test_experiment_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.py"):
        config_lib.load(tmp_path / "missing.py")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="does not define get_config"):
        config_lib.load(tmp_path / "empty.py")


def test_differences_lists_changed_keys():
    a, b = Config(), Config()
    b.model.text.width = 7
    assert config_lib.differences(a, b) == ["model.text.width"]
