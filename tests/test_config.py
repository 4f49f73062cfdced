import json
import textwrap
from pathlib import Path

import pytest

from mmjax import config as config_lib
from mmjax.config import Config, ConfigError
from mmjax.eval import registry
from mmjax.eval.summary import format_results

REPO_EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_overrides_are_parsed_to_the_field_type():
    cfg = Config()
    config_lib.override(cfg, "train.batch_size=48")
    config_lib.override(cfg, "optim.learning_rate=3e-4")
    config_lib.override(cfg, "model.image.pool=mean")
    config_lib.override(cfg, "eval.retrieval.recall_at=1,2,3")
    config_lib.override(cfg, "data.modalities=image,video")
    assert cfg.train.batch_size == 48 and isinstance(cfg.train.batch_size, int)
    assert cfg.optim.learning_rate == pytest.approx(3e-4)
    assert cfg.model.image.pool == "mean"
    assert cfg.eval.retrieval.recall_at == (1, 2, 3)
    assert cfg.data.modalities == ("image", "video")


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


# ---- Validation: Literal choices, strict experiment files, cross-field rules.


def _experiment(tmp_path, body: str) -> Path:
    path = tmp_path / "experiment.py"
    path.write_text("from mmjax.config import Config\n\n\ndef get_config():\n"
                    "    cfg = Config(name='t')\n" + textwrap.indent(textwrap.dedent(body), "    ")
                    + "    return cfg\n")
    return path


def test_every_shipped_experiment_validates():
    for path in sorted(REPO_EXPERIMENTS.glob("*.py")):
        assert config_lib.load(path).name, path


def test_an_unknown_attribute_in_an_experiment_file_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.num_stepz'; did you mean "
                                          r"'train.num_steps'\?"):
        config_lib.load(_experiment(tmp_path, "cfg.train.num_stepz = 5\n"))
    with pytest.raises(ConfigError, match=r"'model.image.patchsize'.*'model.image.patch_size'"):
        config_lib.load(_experiment(tmp_path, "cfg.model.image.patchsize = 4\n"))
    with pytest.raises(ConfigError, match=r"'eval.recall_at'"):  # moved to eval.retrieval
        config_lib.load(_experiment(tmp_path, "cfg.eval.recall_at = (1,)\n"))
    with pytest.raises(ConfigError, match=r"unknown config key 'nmae'; did you mean 'name'"):
        config_lib.Config().nmae = "x"


def test_a_value_outside_a_literal_is_refused_by_set():
    with pytest.raises(ConfigError, match=r"^config key 'model.fusion.kind' expects one of late, "
                                          r"decision, early, hybrid, bottleneck, got 'foo'$"):
        config_lib.override(Config(), "model.fusion.kind=foo")
    with pytest.raises(ConfigError, match=r"'data.modalities' expects one of image, video, "
                                          r"signal, audio, report, got 'xray'"):
        config_lib.override(Config(), "data.modalities=image,xray")
    with pytest.raises(ConfigError, match=r"'data.signal_baseline' expects one of '', median"):
        config_lib.override(Config(), "data.signal_baseline=mean")
    cfg = Config()
    config_lib.override(cfg, "data.signal_baseline=")
    config_lib.override(cfg, "model.video.temporal=lstm")
    assert cfg.data.signal_baseline == "" and cfg.model.video.temporal == "lstm"


def test_a_value_outside_a_literal_is_refused_in_config_json(tmp_path):
    data = config_lib.to_dict(Config())
    data["parallel"]["strategy"] = "ddp"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"'parallel.strategy' expects one of mesh, pmap, "
                                          r"got 'ddp'"):
        config_lib.read(tmp_path / "config.json")
    data = config_lib.to_dict(Config())
    data["objectives"]["mae_modalities"] = ["report"]
    data["objectives"]["mae"] = 1.0
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"objectives.mae_modalities: 'report' has no patch"):
        config_lib.read(tmp_path / "config.json")  # read() validates the rules too


@pytest.mark.parametrize(("body", "match"), [
    ("cfg.model.fusion.kind = 'foo'\n",
     r"'model.fusion.kind' expects one of late, decision, early, hybrid, bottleneck, "
     r"got 'foo'"),
    ("cfg.objectives.contrastive_loss = 'clip'\n",
     r"'objectives.contrastive_loss' expects one of softmax, sigmoid"),
    ("cfg.data.modalities = ('image', 'text')\n", r"'data.modalities' expects one of image"),
    ("cfg.train.num_steps = 'ten'\n", r"'train.num_steps' expects int, got 'ten'"),
    ("cfg.model.image = 3\n", r"'model.image' expects a ViTConfig section, got 3"),
])
def test_a_bad_value_in_an_experiment_file_is_caught_by_load(tmp_path, body, match):
    with pytest.raises(ConfigError, match=match):
        config_lib.load(_experiment(tmp_path, body))


def test_load_normalises_values_to_the_field_type(tmp_path):
    cfg = config_lib.load(_experiment(tmp_path, "cfg.eval.evaluators = ['probe']\n"
                                                "cfg.optim.learning_rate = 1\n"))
    assert cfg.eval.evaluators == ("probe",) and isinstance(cfg.optim.learning_rate, float)


NO_REPORT = ("objectives.contrastive=0", "eval.evaluators=[]")
VIDEO = ("data.modalities=video,report", "objectives.contrastive_pairs=video-report")
RULES = [
    (("parallel.strategy=pmap", "train.accumulation_steps=2"),
     r"train.accumulation_steps > 1 needs parallel.strategy=mesh"),
    (("objectives.matching=1",),
     r"objectives.matching needs model.fusion.kind=early, hybrid or bottleneck: late"),
    (("objectives.matching=1", "model.fusion.kind=early", "model.fusion.kind=decision"),
     r"objectives.matching needs .*: decision fusion"),
    (("objectives.mae=1", "model.image_encoder=resnet"),
     r"objectives.mae_modalities: 'image' has no patch encoder"),
    (("model.image_encoder=resnet", "model.cnn.norm=batch", "train.accumulation_steps=2"),
     r"train.accumulation_steps > 1 with BatchNorm \(model.cnn.norm=batch\)"),
    (("objectives.contrastive_pairs=image-signal",),
     r"objectives.contrastive_pairs 'image-signal' needs signal in data.modalities"),
    (("objectives.contrastive_pairs=image-image",), r"'image-image' is not a pair"),
    (("objectives.contrastive_pairs=imagereport",), r"'imagereport' is not a pair"),
    (("objectives.contrastive_pairs=image-report,image-report",),
     r"objectives.contrastive_pairs repeats a pair"),
    (("objectives.contrastive_pairs=",), r"objectives.contrastive_pairs is empty"),
    (("objectives.contrastive=0",), r"every objectives weight \(contrastive, mlm, .*\) is 0"),
    (("objectives.contrastive=-1",), r"objectives.contrastive=-1.0: objective weights"),
    (("objectives.mlm=1", *NO_REPORT, "data.modalities=image"),
     r"objectives.mlm needs report in data.modalities \(image\)"),
    (("objectives.caption=1", *NO_REPORT, "data.modalities=image"),
     r"objectives.caption needs report"),
    (("objectives.matching=1", "model.fusion.kind=early", "objectives.matching_pair=image-video"),
     r"objectives.matching_pair needs video"),
    (("objectives.matching=1", "model.fusion.kind=early", "objectives.matching_pair=image"),
     r"objectives.matching_pair: 'image' is not a pair"),
    (("objectives.mae=1", "objectives.mae_modalities=video"),
     r"objectives.mae_modalities needs video in data.modalities"),
    (("objectives.mae=1", "objectives.mae_modalities="), r"objectives.mae_modalities must name"),
    ((*VIDEO, "objectives.mae=1", "objectives.mae_modalities=video",
      "model.video.attention=factorised"), r"masked video needs model.video.attention=joint"),
    (("objectives.mae=1", "objectives.mae_mask_ratio=1"), r"objectives.mae_mask_ratio must be"),
    (("objectives.mlm=1", "objectives.mlm_probability=0"), r"objectives.mlm_probability must"),
    (("objectives.diagnosis=1", "model.fusion.kind=hybrid", *NO_REPORT, "data.modalities=image"),
     r"model.fusion.kind=hybrid \(for objectives.diagnosis\) needs two or more "
     r"data.modalities to attend across, got image$"),
    ((*VIDEO, "model.video.pool=last"),
     r"model.video.pool=last does not go with model.video.encoder=tubelet"),
    ((*VIDEO, "model.video.attention=factorised", "model.video.pool=map"),
     r"model.video.pool=map .*; choose from cls, mean$"),
    ((*VIDEO, "model.video.encoder=frames", "model.video.temporal=gru", "model.video.pool=cls"),
     r"model.video.pool=cls .*temporal gru\); choose from last, mean, map"),
    (("train.batch_size=0",), r"train.batch_size must be >= 1, got 0"),
    (("train.num_steps=0",), r"train.num_steps must be >= 1"),
    (("train.log_every=0",), r"train.log_every must be >= 1"),
    (("eval.batch_size=0",), r"eval.batch_size must be >= 1"),
    (("train.accumulation_steps=3",),
     r"train.batch_size=64 is not divisible by train.accumulation_steps=3"),
    (("parallel.data=-1", "parallel.fsdp=-1"), r"only one of parallel.data, parallel.fsdp"),
    (("parallel.tensor=0",), r"parallel.tensor=0: mesh sizes are positive"),
    (("data.train_fraction=0",), r"data.train_fraction must be in \(0, 1\]"),
    (("data.signal_bandpass_hz=40,0.5",), r"data.signal_bandpass_hz must be \(\) or"),
    (("data.signal_notch_hz=-50",), r"data.signal_notch_hz must be positive"),
    (("data.modalities=image,image",), r"data.modalities must name distinct"),
    (("optim.freeze=[",), r"optim.freeze '\[' is not a regular expression"),
    (("eval.evaluators=rouge",), r"eval.evaluators: unknown rouge; known: diagnosis, "),
    (("eval.evaluators=retrieval,retrieval",), r"eval.evaluators: retrieval appears twice"),
    (("eval.evaluators=retrieval@",), r"eval.evaluators: 'retrieval@' names no split"),
    (("eval.evaluators=diagnosis",), r"'diagnosis' needs .*\(objectives.diagnosis > 0\)"),
    (("eval.evaluators=generation@train",), r"'generation' needs .*\(objectives.caption > 0\)"),
    (("eval.evaluators=reconstruction",), r"'reconstruction' needs .*\(objectives.mae > 0\)"),
    (("objectives.contrastive=0", "objectives.mlm=1", "eval.evaluators=probe",
      "data.modalities=report"), r"'probe' needs data.modalities to include image or video"),
    (("data.modalities=image,video,report", "objectives.contrastive_pairs=image-video",
      "data.modalities=image,video"),
     r"'retrieval' needs data.modalities to include report"),
    (("eval.generation.beam_size=0",), r"eval.generation.beam_size must be >= 1"),
    (("eval.retrieval.every=-1",), r"eval.retrieval.every must be >= 0"),
    (("eval.retrieval.recall_at=0,5",), r"eval.retrieval.recall_at must be ranks >= 1"),
    (("eval.probe.fractions=0.5,2",), r"eval.probe.fractions must be in \(0, 1\]"),
]


@pytest.mark.parametrize(("overrides", "match"), RULES, ids=[r[1][:40] for r in RULES])
def test_each_cross_field_rule_names_its_keys(overrides, match):
    config_lib.apply(Config(), overrides[:-1])  # the rule fires on the last override only
    with pytest.raises(ConfigError, match=match):
        config_lib.apply(Config(), overrides)


def test_experiment_file_overrides_are_validated_together():
    # Each alone breaks a rule; together they are a valid config.
    cfg = config_lib.load(REPO_EXPERIMENTS / "tiny_cpu.py",
                          ["objectives.matching=1", "model.fusion.kind=early"])
    assert cfg.objectives.matching == 1.0
    with pytest.raises(ConfigError, match="objectives.matching needs model.fusion.kind"):
        config_lib.load(REPO_EXPERIMENTS / "tiny_cpu.py", ["objectives.matching=1"])


def test_patch_and_batch_norm_helpers():
    cfg = Config().model
    assert config_lib.has_patches(cfg, "image") and config_lib.has_patches(cfg, "signal")
    assert not config_lib.has_patches(cfg, "report") and not config_lib.has_patches(cfg, "audio")
    cfg.image_encoder, cfg.cnn.norm = "resnet", "batch"
    assert not config_lib.has_patches(cfg, "image")
    assert config_lib.uses_batch_norm(cfg, ("image",))
    assert not config_lib.uses_batch_norm(cfg, ("video",))
    cfg.video.encoder, cfg.video.frame_encoder = "frames", "vgg"
    assert config_lib.uses_batch_norm(cfg, ("video",))


def test_transformer_sizes_keep_their_defaults():
    for cls in (config_lib.ViTConfig, config_lib.TextConfig, config_lib.VideoConfig,
                config_lib.SignalConfig, config_lib.AudioConfig, config_lib.FusionConfig):
        c = cls()
        assert (c.width, c.depth, c.num_heads, c.mlp_dim) == (64, 2, 4, 256), cls
    assert config_lib.DecoderConfig().depth == 1
    assert config_lib.sized(config_lib.ViTConfig, "base", patch_size=16).width == 768


# ---- Evaluator runs: `kind` or `kind@split`, each with its own section and schedule.


class _Context:
    """What run_all needs of an EvalContext, recording the files it would write."""

    step = 30

    def __init__(self):
        self.files = {}

    def save_json(self, name, value):
        self.files[name] = value


def test_kind_at_split_resolves_and_runs_twice_with_separate_results(monkeypatch):
    registry._load_all()
    monkeypatch.setitem(registry.EVALUATORS, "retrieval",
                        lambda ctx, run: {"split": run.split, "ks": len(run.options.recall_at)})
    cfg = config_lib.apply(Config(), ["eval.evaluators=retrieval,retrieval@train,probe",
                                      "eval.retrieval.recall_at=1,3", "eval.retrieval.every=10",
                                      "eval.probe.split=val", "data.eval_split=test"])
    runs = registry.resolve(cfg)
    assert [(r.name, r.kind, r.split, r.every) for r in runs] == [
        ("retrieval", "retrieval", "test", 10), ("retrieval@train", "retrieval", "train", 10),
        ("probe", "probe", "val", 0)]
    assert runs[0].options is cfg.eval.retrieval and runs[2].options is cfg.eval.probe
    assert runs[0].due(20) and not runs[0].due(25) and registry.due(runs[0], 30)
    assert not runs[2].due(20) and runs[2].due(25, final=True)

    ctx = _Context()
    results = registry.run_all(ctx, runs[:2])
    assert results == {"retrieval": {"split": "test", "ks": 2},
                       "retrieval@train": {"split": "train", "ks": 2}}
    assert ctx.files["retrieval@train.json"] == {"step": 30, "split": "train",
                                                 "metrics": results["retrieval@train"]}
    assert registry.scalars(results) == {"eval/retrieval/ks": 2.0,
                                         "eval/retrieval@train/ks": 2.0}


def test_a_section_split_is_overridden_by_the_name_and_cli_names_are_checked():
    cfg = config_lib.apply(Config(), ["eval.retrieval.split=val"])
    assert registry.resolve(cfg, ["retrieval@train"])[0].split == "train"
    assert registry.resolve(cfg)[0].split == "val"
    with pytest.raises(ConfigError, match=r"--evals: unknown rouge"):
        registry.resolve(cfg, ["rouge"])
    with pytest.raises(ConfigError, match=r"--evals: evaluator 'diagnosis' needs"):
        registry.resolve(cfg, ["diagnosis"])


def test_summary_lines_of_a_kind_at_split_run_carry_its_name():
    metrics = {"image": {"error": 0.25, "num_examples": 3}}
    assert format_results({"reconstruction@train": metrics}) == \
        "[reconstruction@train] MAE image: hidden-patch error 0.250 (normalised pixels)"
    assert format_results({"reconstruction": metrics}).startswith("MAE image")


def test_a_config_json_with_the_flat_eval_keys_of_old_runs_is_read(tmp_path):
    data = config_lib.to_dict(Config())
    data["eval"] = {"evaluators": ["retrieval", "probe"], "every": 50, "recall_at": [1, 2],
                    "findings": ["nodule"], "probe_examples": 64, "examples": 3,
                    "beam_size": 2, "batch_size": 32}
    (tmp_path / "config.json").write_text(json.dumps(data))
    e = config_lib.read(tmp_path / "config.json").eval
    assert e.retrieval.recall_at == (1, 2) and e.retrieval.every == e.probe.every == 50
    assert e.probe.findings == e.diagnosis.findings == ("nodule",)
    assert e.probe.train_examples == 64 and e.generation.beam_size == 2
    assert e.retrieval.examples == e.reconstruction.examples == 3 and e.batch_size == 32
