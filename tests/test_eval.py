"""Every evaluator on a briefly trained smoke model, against the same model untrained:
metrics in range, learning visible, each example seen exactly once, `mmjax eval`."""

import json

import jax
import numpy as np
import pytest
from conftest import tiny_config, tree_digest

from mmjax import trained
from mmjax.cli import main
from mmjax.config import ConfigError
from mmjax.eval import registry
from mmjax.eval.context import EvalContext, NonfiniteOutputs
from mmjax.nn.build import model_variables, variable_shardings
from mmjax.report import write_report
from mmjax.train.loop import train
from mmjax.train.setup import build, open_input

EVALUATORS = ("retrieval", "zeroshot", "probe", "diagnosis", "generation", "reconstruction",
              "retrieval@train")  # retrieval twice: on the held-out split and on the train split


def _config(dataset):
    cfg = tiny_config(dataset)
    o = cfg.objectives
    o.caption, o.mae, o.diagnosis = 0.5, 0.5, 1.0
    cfg.train.num_steps = 150
    e = cfg.eval
    e.evaluators = EVALUATORS
    e.batch_size = 48  # the 128 held-out patients end in a ragged batch of 32
    e.generation.limit, e.generation.beam_size, e.probe.train_examples = 48, 3, 1024
    e.retrieval.examples = e.generation.examples = e.reconstruction.examples = 4
    return cfg


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, smoke_dataset):
    """(config, workdir, trained results, the untrained model's results)."""
    cfg = _config(smoke_dataset)
    workdir = tmp_path_factory.mktemp("evaluated")
    results = train(cfg, workdir, progress=False)["evals"]
    data = open_input(cfg)
    run = build(cfg, data.define_model(cfg), data.batches[0])
    variables = model_variables(run.state.params, run.state.batch_stats)
    shardings = variable_shardings(run.param_shardings, run.mesh, bool(run.state.batch_stats))
    untrained = EvalContext(cfg, run.definition.module, variables, shardings, run.mesh,
                            data.tokenizer, data.label_names, 0)
    return cfg, workdir, results, registry.run_all(untrained, registry.resolve(cfg))


def test_retrieval_beats_chance_and_the_untrained_model(evaluated):
    _, _, results, untrained = evaluated
    pair, before = results["retrieval"]["image-report"], untrained["retrieval"]["image-report"]
    assert pair["num_examples"] > 100
    assert pair["image_to_report"]["R@10"] > 2.5 * pair["chance"]["R@10"]
    assert pair["report_to_image"]["median_rank"] < before["report_to_image"]["median_rank"]


def test_an_evaluator_twice_on_two_splits_keeps_separate_results(evaluated):
    _, workdir, results, _ = evaluated
    held_out, on_train = results["retrieval"], results["retrieval@train"]
    assert held_out["image-report"]["num_examples"] <= 128
    assert on_train["image-report"]["num_examples"] > 1000  # of the 4096 training patients
    for name, split in (("retrieval", "eval"), ("retrieval@train", "train")):
        written = json.loads((workdir / "eval" / f"{name}.json").read_text())
        assert written["split"] == split
        assert json.dumps(written["metrics"]) == json.dumps(results[name])
    assert (workdir / "eval" / "retrieval@train_examples_image.json").is_file()


def test_zeroshot_and_diagnosis_auc_are_learned(evaluated):
    _, _, results, untrained = evaluated
    zeroshot = results["zeroshot"]["image"]
    assert zeroshot["mean_auc"] > untrained["zeroshot"]["image"]["mean_auc"] + 0.1
    assert 0 <= zeroshot["accuracy"] <= 1
    diagnosis = results["diagnosis"]
    assert diagnosis["mean_auc"] > 0.75 > untrained["diagnosis"]["mean_auc"] + 0.1
    # Each AUC with its positives and a bootstrap interval (eval.bootstrap_samples).
    low, high = diagnosis["mean_auc_ci95"]
    assert low < diagnosis["mean_auc"] < high and high - low < 0.3
    assert sum(diagnosis["positives"].values()) + sum(diagnosis["negatives"].values()) == \
        diagnosis["num_examples"] * len(diagnosis["positives"])
    assert zeroshot["auc_ci95"].keys() == diagnosis["sensitivity"].keys()
    assert all(0 <= v <= 1 for k, v in diagnosis.items() if k.startswith("auc/") and v)


def test_linear_probe_improves_with_labels_and_pretraining(evaluated):
    _, _, results, untrained = evaluated
    probe, before = results["probe"]["image"], untrained["probe"]["image"]
    counts = [v["num_labelled"] for v in probe.values()]  # of ~980 with an image
    assert counts == sorted(counts) and counts[0] == 10 and counts[-1] > 950
    assert probe["1"]["mean_auc"] > probe["0.01"]["mean_auc"]
    assert probe["0.1"]["mean_auc"] > before["0.1"]["mean_auc"]


def test_generated_reports_score_and_beam_is_at_least_greedy(evaluated):
    _, workdir, results, untrained = evaluated
    generation = results["generation"]
    assert 40 <= generation["num_examples"] <= 48  # of the first 48, those with a report
    for method in ("greedy", "beam"):
        assert 0 <= generation[method]["rouge_l"] <= 1
        assert generation[method]["rouge_l"] > untrained["generation"][method]["rouge_l"] + 0.1
    assert generation["beam"]["log_likelihood"] >= generation["greedy"]["log_likelihood"]
    examples = json.loads((workdir / "eval" / "generation_examples.json").read_text())
    assert len(examples) == 4 and all(e["reference"] and e["greedy"] for e in examples)
    # References are the reports as stored, not the tokenizer's lower-cased round trip.
    stored = trained.load(workdir).records([e["index"] for e in examples])
    assert [e["reference"] for e in examples] == [r["report"] for r in stored]
    assert all("FINDINGS:" in e["reference"] for e in examples)


def test_generation_f1_is_over_the_configured_findings(evaluated):
    _, workdir, results, _ = evaluated
    assert set(results["generation"]["beam"]["per_finding"]) == set(trained.load(
        workdir).label_names)  # (): every label the extractor knows
    ctx = trained.load(workdir)
    ctx.cfg.eval.evaluators = ("generation",)
    ctx.cfg.eval.generation.findings = ("cardiomegaly", "nodule")
    scored = registry.run_all(ctx, registry.resolve(ctx.cfg))["generation"]
    for method in ("greedy", "beam"):
        assert list(scored[method]["per_finding"]) == ["cardiomegaly", "nodule"]
        per_finding = results["generation"][method]["per_finding"]
        assert scored[method]["per_finding"]["nodule"] == pytest.approx(per_finding["nodule"],
                                                                        nan_ok=True)
    ctx.cfg.eval.generation.findings = ("cardiomegaly", "fracture")
    with pytest.raises(ConfigError, match=r"eval.generation.findings: fracture are not labels"):
        registry.run_all(ctx, registry.resolve(ctx.cfg))


def test_mae_reconstruction_is_learned(evaluated):
    _, workdir, results, untrained = evaluated
    error = results["reconstruction"]["image"]["error"]
    assert error < 0.8 * untrained["reconstruction"]["image"]["error"]
    grid = np.load(workdir / "eval" / "reconstruction_image.npz")
    assert grid["original"].shape == grid["reconstruction"].shape == (4, 32, 32, 1)


def test_every_example_once_whatever_the_batch_size(evaluated):
    """The ragged last batch is padded and the padding dropped: 48-example batches give
    the same rows and embeddings as 128-example ones."""
    cfg, workdir, _, _ = evaluated
    ctx = trained.load(workdir)
    small = ctx.predictions()
    ctx.cfg.eval.batch_size = 128
    ctx = ctx.at(ctx.variables, ctx.step)  # the same model, results recomputed
    big = ctx.predictions()
    assert np.array_equal(small.index, np.arange(128)) and np.array_equal(big.index, small.index)
    np.testing.assert_allclose(small.embeddings["image"], big.embeddings["image"], atol=1e-5)


def test_a_model_giving_nan_embeddings_is_refused_not_scored(evaluated):
    """One NaN weight in the image tower: every evaluator would otherwise rank and score
    NaN embeddings as numbers (issue 17: R@1 1.000 for an all-NaN model)."""
    _, workdir, _, _ = evaluated
    ctx = trained.load(workdir)
    params = ctx.variables["params"]
    tower = next(name for name in params if "image" in name)
    first = jax.tree_util.tree_flatten_with_path(params[tower])[0][0][0]
    broken = jax.tree_util.tree_map_with_path(
        lambda path, x: x * np.nan if path == first else x, params[tower])
    ctx = ctx.at({**ctx.variables, "params": {**params, tower: broken}}, ctx.step)
    with pytest.raises(NonfiniteOutputs, match=r"NaN or Inf embeddings/image for (\d+) of \1 "):
        registry.run_all(ctx, registry.resolve(ctx.cfg))
    assert issubclass(NonfiniteOutputs, ConfigError)  # `mmjax eval` exits 2 with it


def test_mmjax_eval_reproduces_the_end_of_training_evals(evaluated, capsys):
    _, workdir, results, _ = evaluated
    checkpoints = tree_digest(workdir / "checkpoints")
    assert main(["eval", "--workdir", str(workdir), "--evals", "retrieval,diagnosis"]) == 0
    assert tree_digest(workdir / "checkpoints") == checkpoints  # evaluation only reads
    assert "held-out retrieval image-report" in capsys.readouterr().out
    for name in ("retrieval", "diagnosis"):
        written = json.loads((workdir / "eval" / f"{name}.json").read_text())
        assert written["step"] == 150
        assert json.dumps(written["metrics"]) == json.dumps(results[name])


def test_evaluators_are_checked_before_training(tmp_path, smoke_dataset):
    cfg = tiny_config(smoke_dataset)
    cfg.eval.evaluators = ("retrieval", "rouge")
    with pytest.raises(ConfigError, match="unknown rouge; known: diagnosis, generation"):
        train(cfg, tmp_path, progress=False)
    cfg.eval.evaluators = ("diagnosis",)
    with pytest.raises(ConfigError, match="objectives.diagnosis > 0"):
        train(cfg, tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_eval_errors_name_the_folder_or_key(evaluated, tmp_path, capsys):
    assert main(["eval", "--workdir", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a training workdir" in capsys.readouterr().err
    _, workdir, _, _ = evaluated
    assert main(["eval", "--workdir", str(workdir), "--set", "model.embed_dim=8"]) == 2
    assert "only eval.* keys" in capsys.readouterr().err
    assert main(["eval", "--workdir", str(workdir), "--step", "7"]) == 2
    assert "no checkpoint of step 7" in capsys.readouterr().err
    # A checkpoint that does not fit its config: the first differing parameter is named.
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoints").symlink_to(workdir / "checkpoints")
    config = json.loads((workdir / "config.json").read_text())
    config["model"]["embed_dim"] = 24
    (other / "config.json").write_text(json.dumps(config))
    assert main(["eval", "--workdir", str(other)]) == 2
    assert "does not fit the model its config.json describes: params/" in \
        capsys.readouterr().err


def test_the_report_of_an_evaluated_run_has_every_section(evaluated, tmp_path):
    _, workdir, _, _ = evaluated
    page = write_report([workdir], tmp_path / "report.html").read_text()
    for heading in ("Training curves", "Evaluation metrics", "ROC curves", "Retrieval examples",
                    "MAE reconstructions", "Generated reports"):
        assert f"<h2>{heading}" in page
    assert "not available" not in page
