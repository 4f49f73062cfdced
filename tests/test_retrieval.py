import numpy as np
import pytest

from mmjax.eval.retrieval import format_table, ranks_of_matches, recall_at_k, retrieval_metrics


def test_perfect_and_reversed_rankings():
    n = 20
    assert recall_at_k(np.eye(n), (1, 5))["R@1"] == 1.0
    # Scores that put the match last in every row.
    worst = 1.0 - np.eye(n)
    metrics = recall_at_k(worst, (1, 5, 10))
    assert metrics["R@10"] == 0.0 and metrics["median_rank"] == n


def test_ties_count_against_the_match():
    """A collapsed model must not look perfect."""
    assert (ranks_of_matches(np.ones((8, 8))) == 7).all()


def test_known_ranks():
    similarity = np.array([[0.9, 0.1, 0.0], [0.5, 0.4, 0.6], [0.3, 0.2, 0.1]])
    assert ranks_of_matches(similarity).tolist() == [0, 2, 2]
    assert recall_at_k(similarity, (1, 3)) == {"R@1": pytest.approx(1 / 3), "R@3": 1.0,
                                                "median_rank": 3.0}


def test_random_embeddings_score_near_chance():
    rng = np.random.default_rng(0)
    n = 400
    metrics = retrieval_metrics(rng.normal(size=(n, 16)), rng.normal(size=(n, 16)), (1, 10))
    assert metrics["chance"]["R@10"] == pytest.approx(10 / n)
    assert metrics["image_to_report"]["R@10"] < 3 * 10 / n
    assert "chance" in format_table({"image-report": metrics})
