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


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_rank_exactly_k_is_a_hit_for_recall_at_k_only(k):
    """The match has exactly k - 1 strictly better candidates: 1-based rank k."""
    n = 6
    similarity = np.zeros((n, n))
    similarity[0, 0] = 0.5
    similarity[0, 1:k] = 0.9  # k - 1 wrong candidates above the match
    ranks = ranks_of_matches(similarity)
    assert ranks[0] == k - 1
    metrics = recall_at_k(similarity[:1, :], (k, k - 1) if k > 1 else (k,))
    assert metrics[f"R@{k}"] == 1.0
    if k > 1:
        assert metrics[f"R@{k - 1}"] == 0.0


def test_a_tie_with_a_different_candidate_counts_against_the_match():
    similarity = np.array([[0.5, 0.5, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert ranks_of_matches(similarity).tolist() == [1, 0, 0]
    assert recall_at_k(similarity, (1,))["R@1"] == pytest.approx(2 / 3)


def test_identical_reports_are_hits():
    """6 studies, 2 distinct (templated) report texts: a model that scores the right text
    highest is perfect, though every row ties its match with the match's copies."""
    reports = ["No acute findings.", "Right pleural effusion."] * 3
    kind = np.array([0, 1] * 3)
    query_emb = np.eye(2)[kind]  # each image points at the text it describes
    report_emb = np.eye(2)[kind]  # copies of a text embed identically
    metrics = retrieval_metrics(query_emb, report_emb, (1,), reports=reports)
    assert metrics["image_to_report"]["R@1"] == 1.0
    assert metrics["image_to_report"]["median_rank"] == 1.0
    # Without the texts the copies tie with the match and count against it.
    assert retrieval_metrics(query_emb, report_emb, (1,))["image_to_report"]["R@1"] == 0.0
    similarity = query_emb @ report_emb.T
    assert ranks_of_matches(similarity, reports).tolist() == [0] * 6
    # A wrong text scored above the match still counts, once per candidate.
    similarity[0, 1] = similarity[0, 3] = 2.0
    assert ranks_of_matches(similarity, reports)[0] == 2


def test_token_id_keys_and_unknown_reports():
    ids = [np.array([5, 6, 0]), np.array([5, 6, 0]), np.array([7, 0, 0])]
    assert (ranks_of_matches(np.ones((3, 3)), ids) == [1, 1, 2]).all()
    # Unknown content (None) is identical to nothing: a collapsed model stays last.
    assert (ranks_of_matches(np.ones((3, 3)), [None] * 3) == 2).all()
