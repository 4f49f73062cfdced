"""A NaN or corrupted model must not score well: every evaluator ranks non-finite scores
last (issue 17: an all-NaN model reported R@1 1.000 and zero-shot accuracy 0.90)."""

import numpy as np
import pytest

from mmjax.config import Config
from mmjax.config.evaluation import RetrievalEval, ZeroshotEval
from mmjax.eval import retrieval, zeroshot
from mmjax.eval.auc import per_label_auc, roc_auc, roc_curve
from mmjax.eval.context import Predictions
from mmjax.eval.registry import EvalRun

NAN, INF = float("nan"), float("inf")


def test_all_nan_scores_retrieve_nothing():
    n = 10
    similarity = np.full((n, n), NAN)
    assert (retrieval.ranks_of_matches(similarity) == n - 1).all()
    metrics = retrieval.recall_at_k(similarity, (1, 5))
    assert metrics == {"R@1": 0.0, "R@5": 0.0, "median_rank": float(n)}
    # Identical report texts do not rescue a NaN match either.
    texts = ["same report"] * n
    assert retrieval.recall_at_k(similarity, (1,), texts)["R@1"] == 0.0


def test_all_nan_embeddings_retrieve_nothing():
    n = 8
    nan = np.full((n, 4), NAN, np.float32)
    metrics = retrieval.retrieval_metrics(nan, nan, (1, 5), reports=[f"r{i % 2}" for i in range(n)])
    for direction in ("image_to_report", "report_to_image"):
        assert metrics[direction]["R@1"] == 0.0 and metrics[direction]["R@5"] == 0.0


def test_a_nan_row_ranks_its_example_last():
    similarity = np.eye(5)
    similarity[2, 2] = NAN
    assert retrieval.ranks_of_matches(similarity).tolist() == [0, 0, 4, 0, 0]
    for bad in (INF, -INF):
        similarity[2, 2] = bad
        assert retrieval.ranks_of_matches(similarity)[2] == 4
    similarity[2] = NAN  # the whole row
    assert retrieval.ranks_of_matches(similarity)[2] == 4


def test_nonfinite_wrong_candidates():
    """+Inf on a wrong candidate is above every finite score and counts against the match;
    NaN (or -Inf) on a wrong candidate never outranks it."""
    similarity = np.eye(4) * 0.5
    similarity[0, 3] = INF
    similarity[1, 0] = NAN
    similarity[2, 1] = -INF
    assert retrieval.ranks_of_matches(similarity).tolist() == [1, 0, 0, 0]


def test_nonfinite_scores_never_improve_an_auc():
    labels = np.array([1, 0, 1, 0], bool)
    assert roc_auc(labels, [INF, 0.1, 0.9, -INF]) == 0.25  # was 1.0: both infinities now hurt
    assert roc_auc(labels, [NAN] * 4) == 0.0  # was NaN, so dropped from the mean AUC
    assert roc_auc(labels, [NAN, 0.1, 0.9, 0.2]) == 0.5  # was NaN
    assert roc_auc(labels, [0.8, 0.1, 0.9, 0.2]) == 1.0  # finite scores: unchanged
    fpr, tpr = roc_curve(labels, [NAN] * 4)
    assert fpr.tolist() == [0.0, 1.0, 1.0] and tpr.tolist() == [0.0, 0.0, 1.0]
    nan_column = per_label_auc(np.c_[labels, labels], np.c_[[0.8, 0.1, 0.9, 0.2], [NAN] * 4],
                               ("a", "b"))
    assert nan_column["auc/b"] == 0.0 and nan_column["mean_auc"] == 0.5


def test_zeroshot_accuracy_counts_nonfinite_scores_as_misses():
    labels = np.array([[0, 0], [0, 1], [0, 0]], bool)  # mostly negative, like findings
    assert zeroshot.zeroshot_accuracy(np.full(labels.shape, NAN), labels) == 0.0  # was 5/6
    scores = np.array([[-1.0, -1.0], [-1.0, 1.0], [NAN, INF]])
    assert zeroshot.zeroshot_accuracy(scores, labels) == pytest.approx(4 / 6)


class _FakeContext:
    """What the retrieval and zero-shot evaluators read, for a model gone NaN."""

    label_names = ("effusion", "pneumonia")
    out_dir = None
    cfg = Config()

    def __init__(self, n: int, dim: int = 8):
        rng = np.random.default_rng(0)
        labels = (rng.random((n, 2)) < 0.1).astype(np.float32)  # rare findings
        labels[0] = 1.0
        nan = np.full((n, dim), NAN, np.float32)
        ones = np.ones(n, bool)
        self._predictions = Predictions(
            index=np.arange(n), embeddings={"image": nan, "report": nan.copy()},
            present={"image": ones, "report": ones}, labels=labels, has_labels=ones,
            risk=np.zeros(n), has_risk=~ones, diagnosis=None, risk_logit=None)
        self._reports = [("No acute findings.", "Small effusion.")[i % 2] for i in range(n)]
        self._rng = rng

    def predictions(self, split=None):
        return self._predictions

    def records(self, indices, split=None):
        return [{"report": self._reports[int(i)]} for i in indices]

    def embed_texts(self, texts):
        return self._rng.normal(size=(len(texts), 8))

    def save_arrays(self, name, **arrays):
        pass


def _run(kind, options):
    return EvalRun(kind, kind, "eval", 0, options, fn=None)


def test_an_all_nan_model_scores_no_better_than_chance_end_to_end():
    ctx = _FakeContext(40)
    found = retrieval.evaluate(ctx, _run("retrieval", RetrievalEval()))["image-report"]
    assert found["image_to_report"]["R@1"] == 0.0  # was 1.0
    assert found["report_to_image"]["R@10"] == 0.0
    assert found["image_to_report"]["median_rank"] == 40.0
    shot = zeroshot.evaluate(ctx, _run("zeroshot", ZeroshotEval()))["image"]
    assert shot["accuracy"] == 0.0  # was the fraction of negative labels (~0.9)
    assert shot["mean_auc"] == 0.0
