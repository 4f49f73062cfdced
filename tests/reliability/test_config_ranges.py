"""Out-of-range values are refused when the config loads, naming the key, whether they
come from `--set`, an experiment file or a config.json; `mmjax train` exits 2 with the
message as one line, before anything is built."""

import json
import textwrap

import pytest

from mmjax import cli
from mmjax import config as config_lib
from mmjax.config import Config, ConfigError

# (override, what the error says): each a value the trainer would misuse, not reject.
OUT_OF_RANGE = [
    ("train.batch_size=-8", r"train.batch_size must be >= 1, got -8"),
    ("train.batch_size=0", r"train.batch_size must be >= 1, got 0"),
    ("train.num_steps=0", r"train.num_steps must be >= 1, got 0"),
    ("train.max_checkpoints=-1", r"train.max_checkpoints must be >= 1, got -1"),
    ("train.seed=-1", r"train.seed must be >= 0, got -1"),
    ("optim.learning_rate=-0.001", r"optim.learning_rate must be >= 0, got -0.001"),
    ("optim.learning_rate=nan", r"'optim.learning_rate' expects a finite number, got nan"),
    ("optim.learning_rate=inf", r"'optim.learning_rate' expects a finite number, got inf"),
    ("optim.warmup_steps=-5", r"optim.warmup_steps must be >= 0"),
    ("optim.b2=1", r"optim.b2 must be in \[0, 1\), got 1.0"),
    ("optim.grad_clip_norm=0", r"optim.grad_clip_norm must be > 0, got 0.0"),
    ("optim.layer_decay=0", r"optim.layer_decay must be in \(0, 1\], got 0.0"),
    ("model.embed_dim=0", r"model.embed_dim must be >= 1, got 0"),
    ("model.init_temperature=-1", r"model.init_temperature must be >= 0"),
    ("model.min_logit_scale=0", r"model.min_logit_scale must be > 0"),
    ("model.image.num_heads=0", r"model.image.num_heads must be >= 1"),
    ("data.max_text_len=1", r"data.max_text_len must be >= 2, got 1"),
    ("data.signal_notch_hz=50,nan", r"'data.signal_notch_hz' expects a finite number"),
    ("model.image_encoder=foo", r"'model.image_encoder' expects one of vit, resnet, vgg, "
                                r"got 'foo'"),
    ("model.video.frame_encoder=foo", r"'model.video.frame_encoder' expects one of vit"),
]


@pytest.mark.parametrize(("override", "match"), OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_set_refuses_an_out_of_range_value(override, match):
    with pytest.raises(ConfigError, match=match):
        config_lib.apply(Config(), [override])


def test_the_limits_themselves_are_accepted():
    cfg = config_lib.apply(Config(), ["train.batch_size=1", "optim.learning_rate=0",
                                      "optim.b1=0", "optim.layer_decay=1", "train.seed=0",
                                      "data.max_text_len=2"])
    assert cfg.train.batch_size == 1 and cfg.optim.learning_rate == 0.0


@pytest.mark.parametrize(("assignment", "match"), [
    ("cfg.train.batch_size = -4", r"train.batch_size must be >= 1, got -4"),
    ("cfg.optim.learning_rate = float('nan')", r"'optim.learning_rate' expects a finite"),
    ("cfg.train.max_checkpoints = -2", r"train.max_checkpoints must be >= 1, got -2"),
    ("cfg.model.image_encoder = 'foo'", r"'model.image_encoder' expects one of vit"),
])
def test_an_experiment_file_with_an_out_of_range_value_fails_to_load(tmp_path, assignment,
                                                                      match):
    experiment = tmp_path / "experiment.py"
    experiment.write_text(textwrap.dedent(f"""
        from mmjax.config import Config

        def get_config():
            cfg = Config()
            {assignment}
            return cfg
    """))
    with pytest.raises(ConfigError, match=match):
        config_lib.load(experiment)


def test_a_config_json_with_an_out_of_range_value_fails_to_read(tmp_path):
    data = config_lib.to_dict(Config())
    data["optim"]["learning_rate"] = -1.0
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"optim.learning_rate must be >= 0, got -1.0"):
        config_lib.read(tmp_path / "config.json")


@pytest.mark.parametrize("override", ["train.batch_size=-1", "optim.learning_rate=nan",
                                      "model.image_encoder=foo"])
def test_train_exits_2_with_one_line_naming_the_key(tmp_path, capsys, override):
    experiment = tmp_path / "experiment.py"
    experiment.write_text("from mmjax.config import Config\n\n\ndef get_config():\n"
                          "    return Config()\n")
    status = cli.main(["train", "--config", str(experiment), "--workdir",
                       str(tmp_path / "run"), "--set", override])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("mmjax: error: ")
    assert override.split("=")[0] in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the workdir is made
