"""The run report: every section from a fake workdir, and 'not available' instead of a crash
when files are missing or malformed."""

import json
import re

import numpy as np
import pytest

from mmjax import config as config_lib
from mmjax.report import write_report

SECTIONS = ("Run", "Training curves", "Evaluation metrics", "ROC curves", "Retrieval examples",
            "MAE reconstructions", "Generated reports")
FINDINGS = ["effusion", "edema", "pneumonia"]
EXAMPLES = 3
SCRIPT = "<script>alert('x')</script> small effusion"
# Losses, other training scalars, eval curves, two ROC files, 3 query images, MAE grid.
PNGS = 3 + 2 + EXAMPLES + 1


def _write_json(path, value):
    path.write_text(json.dumps(value))


def _minimal_workdir(path, name="t"):
    path.mkdir()
    config_lib.save(config_lib.Config(name=name), path / "config.json")
    rows = [{"step": s, "loss": 5 - s / 20, "loss/contrastive/image-report": 4 - s / 20,
             "loss/mae/image": 1.0, "learning_rate": 1e-3, "grad_norm": 2.0,
             "temperature": 0.07, "examples_per_sec": 100.0} for s in range(10, 60, 10)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _full_workdir(path):
    _minimal_workdir(path)
    rng = np.random.default_rng(0)
    with (path / "metrics.jsonl").open("a") as f:
        for step in (30, 50):
            f.write(json.dumps({"step": step,
                                "eval/retrieval/image-report/image_to_report/R@1": step / 100,
                                "eval/retrieval/image-report/image_to_report/median_rank": 9.0,
                                "eval/retrieval/image-report/num_examples": 64,
                                "eval/zeroshot/image/mean_auc": 0.7,
                                "eval/zeroshot/image/auc/effusion": 0.8}) + "\n")
    eval_dir = path / "eval"
    eval_dir.mkdir()
    recall = {"R@1": 0.1, "R@5": 0.3, "R@10": 0.5, "median_rank": 9.0}
    aucs = {"mean_auc": 0.7, **{f"auc/{n}": 0.7 for n in FINDINGS}, "auc/pneumonia": None}
    metrics = {
        "retrieval": {"image-report": {"num_examples": 64, "image_to_report": recall,
                                       "report_to_image": recall,
                                       "chance": {"R@1": 1 / 64, "R@5": 5 / 64, "R@10": 10 / 64}}},
        "zeroshot": {"image": {"num_examples": 64, **aucs, "mean_auc_over": FINDINGS,
                               "accuracy": 0.6}},
        "probe": {"image": {f: {"num_labelled": n, **aucs}
                            for f, n in (("0.01", 2), ("0.1", 6), ("1", 64))}},
        "diagnosis": {"num_examples": 64, **aucs, "accuracy": 0.8, "risk_auc": 0.75},
        "generation": {"num_examples": 8, **{m: {"bleu4": 0.2, "rouge_l": 0.4, "micro_f1": 0.5,
                                                 "per_finding": {"edema": None}}
                                             for m in ("greedy", "beam")}},
        "reconstruction": {"image": {"num_examples": 64, "error": 0.5}},
    }
    for name, value in metrics.items():
        _write_json(eval_dir / f"{name}.json", {"step": 50, "metrics": value})
    for name in ("zeroshot_image", "diagnosis"):
        np.savez_compressed(eval_dir / f"{name}.npz", labels=rng.random((40, 3)) > 0.5,
                            scores=rng.normal(size=(40, 3)), names=np.asarray(FINDINGS))
    reports = [SCRIPT, "no effusion", "mild edema"]
    _write_json(eval_dir / "retrieval_examples_image.json", [
        {"index": i, "report": reports[i],
         "candidates": [{"report": reports[(i + j) % 3], "score": 0.9 - j / 10,
                         "correct": j == 0} for j in range(3)]} for i in range(EXAMPLES)])
    np.savez_compressed(eval_dir / "retrieval_examples_image.npz",
                        images=rng.random((EXAMPLES, 16, 16, 1)))
    np.savez_compressed(eval_dir / "reconstruction_image.npz",
                        **{k: rng.normal(size=(4, 16, 16, 3))
                           for k in ("original", "masked", "reconstruction")})
    _write_json(eval_dir / "generation_examples.json", [
        {"index": i, "reference": reports[i], "greedy": "no edema", "beam": "no edema."}
        for i in range(EXAMPLES)])
    return path


@pytest.fixture(scope="module")
def full_workdir(tmp_path_factory):
    return _full_workdir(tmp_path_factory.mktemp("report") / "run")


def _pngs(page: str) -> int:
    return page.count("data:image/png;base64,")


def test_every_section_from_a_full_workdir(full_workdir):
    out = write_report([full_workdir])
    assert out == full_workdir / "report.html"
    page = out.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "not available" not in page
    assert _pngs(page) == PNGS
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert "class=correct" in page
    assert "n/a" in page  # the null AUC
    for text in ("image to report", "median rank", "mean auc", "risk auc", "bleu4", "error",
                 "by fraction of the training labels", "contrastive × 1"):
        assert text in page, text


def test_two_workdirs_give_two_groups(tmp_path):
    pretrain = _minimal_workdir(tmp_path / "pretrain", name="pt")
    finetune = _minimal_workdir(tmp_path / "finetune", name="ft")
    out = write_report([pretrain, finetune], tmp_path / "both.html")
    assert out == tmp_path / "both.html"
    page = out.read_text()
    assert page.count('<section class="run"') == 2
    assert page.count("<h2>ROC curves</h2>") == 2
    first, second = page.split('<section class="run"')[1:]
    assert "<h1>pt <small>" in first and str(pretrain) in first
    assert "<h1>ft <small>" in second and str(finetune) in second
    assert _pngs(first) == _pngs(second) == 2


def test_config_and_metrics_alone_render_with_not_available_lines(tmp_path):
    page = write_report([_minimal_workdir(tmp_path / "run")]).read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    # Evaluation during training, metrics, ROC, retrieval, reconstructions, generation.
    assert page.count("not available: ") == 6
    assert "no eval/zeroshot_&lt;modality&gt;.npz" in page
    assert _pngs(page) == 2


def test_malformed_files_name_themselves(tmp_path):
    run = _minimal_workdir(tmp_path / "run")
    (run / "eval").mkdir()
    (run / "eval" / "retrieval.json").write_text('{"step": 1, "metr')
    (run / "eval" / "zeroshot_image.npz").write_bytes(b"not a zip")
    np.savez(run / "eval" / "diagnosis.npz", labels=np.zeros((2, 1), bool),
             scores=np.zeros((2, 1)), names=np.array([{"pickled": 1}], dtype=object))
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 50, "eval/retrieval/image-report/image_to_report/R@1": 0.25})
                + '\n{"step": 60, "loss": 1.')  # killed mid-write
    page = write_report([run]).read_text()
    assert "<caption>step 50</caption>" in page and "<td>0.250</td>" in page  # one eval step
    for name in ("retrieval.json", "zeroshot_image.npz", "diagnosis.npz"):
        assert re.search(rf"not available: [^<]*{name}: \w+", page), name
    assert "skipped malformed lines [7]" in page
    assert _pngs(page) == 2


def test_missing_workdir_or_run_files_are_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        write_report([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    config_lib.save(config_lib.Config(name="t"), tmp_path / "empty" / "config.json")
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        write_report([tmp_path / "empty"])
