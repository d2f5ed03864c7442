import numpy as np
import pytest

from reasonrl.gr2_plugins.semantic_ids import RQVAEParams, SemanticIdParams
from reasonrl.gr2_plugins.semantic_ids import (
    RQVAE,
    RQKMeans,
    add_dedup_code,
    level_usage,
    resolve_collisions,
    sid_string,
    uniqueness,
)


def embeddings(n=1500, dim=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def test_resolve_collisions_takes_the_nearest_free_code():
    codes = np.array([[0, 0, 1], [0, 0, 1], [0, 1, 1]])
    last = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    residuals = np.array([[1.0, 0.0], [4.0, 4.0], [1.0, 0.0]])
    fixed = resolve_collisions(codes, residuals, last, "nearest_free", seed=0)
    assert fixed.tolist() == [[0, 0, 1], [0, 0, 2], [0, 1, 1]]  # item 1 moves to centroid 2, its nearest free one
    assert uniqueness(codes) == pytest.approx(2 / 3) and uniqueness(fixed) == 1.0
    randomly = resolve_collisions(codes, residuals, last, "random_free", seed=0)
    assert randomly[1, -1] in (0, 2) and uniqueness(randomly) == 1.0


def test_dedup_code_and_level_usage_by_hand():
    assert add_dedup_code(np.array([[1, 2], [1, 2], [3, 4]])).tolist() == [[1, 2, 0], [1, 2, 1], [3, 4, 0]]
    usage = level_usage(np.array([[0, 0], [0, 1], [1, 2], [1, 3]]), [4, 4])
    assert usage[0] == {"used": 2, "size": 4, "usage": 0.5, "entropy_bits": 1.0, "max_bits": 2.0}
    assert usage[1]["entropy_bits"] == pytest.approx(2.0)


def test_sid_strings_look_like_the_paper():
    assert sid_string([97, 168, 137, 135]) == "<|sid_begin|><s_a_97><s_b_168><s_c_137><s_d_135><|sid_end|>"


def test_rq_kmeans_makes_unique_codes_and_encodes_new_items():
    x = embeddings()
    tokenizer = RQKMeans(SemanticIdParams(levels=3, codebook_size=16, iterations=10)).fit(x)
    report = tokenizer.report()
    assert report["items"] == 1500 and report["uniqueness"] == 1.0
    assert report["uniqueness_raw"] <= report["uniqueness"]
    # every raw duplicate but one keeps its code; the rest were moved to a free code
    distinct_raw = len({tuple(row) for row in tokenizer.raw_codes})
    assert report["moved_by_collision_handling"] == 1500 - distinct_raw
    assert tokenizer.codes.shape == (1500, 3) and tokenizer.codes.max() < 16
    assert [lvl["size"] for lvl in report["levels"]] == [16, 16, 16]
    # new items follow the same codebooks: a training item encodes to its raw code
    assert (tokenizer.encode(x[:50]) == tokenizer.raw_codes[:50]).all()
    assert len(tokenizer.vocabulary()) == 2 + 3 * 16


def test_too_small_codebooks_leave_collisions_for_the_dedup_token():
    x = embeddings(n=400)
    plain = RQKMeans(SemanticIdParams(levels=2, codebook_size=4, iterations=5)).fit(x)
    assert plain.report()["uniqueness"] < 1.0  # 16 cells for 400 items
    dedup = RQKMeans(SemanticIdParams(levels=2, codebook_size=4, iterations=5, dedup_token=True)).fit(x)
    assert dedup.report()["uniqueness"] == 1.0 and dedup.codes.shape[1] == 3


def test_rq_vae_learns_codes_with_ema_codebooks():
    x = embeddings(n=600)
    params = RQVAEParams(levels=3, codebook_size=16, epochs=30, batch_size=128, latent_dim=16, hidden_dim=64)
    tokenizer = RQVAE(params).fit(x)
    report = tokenizer.report()
    assert report["uniqueness"] == 1.0 and np.isfinite(report["reconstruction_mse"])
    assert report["levels"][0]["used"] > 4  # the first level spreads items over many codes
    assert tokenizer.encode(x[:5]).shape == (5, 3)


def test_codebook_list_must_match_levels():
    with pytest.raises(ValueError, match="lists 2 sizes for 3 levels"):
        SemanticIdParams(levels=3, codebook_size=[8, 8]).sizes()


def test_nearest_free_assignment_by_hand():
    import numpy as np

    from reasonrl.gr2_plugins.semantic_ids import nearest_free_assignment

    d = np.array([[1.0, 2.0, 9.0],
                  [0.5, 3.0, 9.0],
                  [9.0, 1.0, 2.0]])
    # round 1: rows 0 and 1 want column 0 (row 1 is closer, wins), row 2 wants column 1 (wins)
    # round 2: row 0's nearest open column is 2
    assert nearest_free_assignment(d).tolist() == [2, 0, 1]
    many = np.random.default_rng(0).random((50, 64))
    out = nearest_free_assignment(many)
    assert len(set(out.tolist())) == 50


def _quantisation_error(tokenizer, x):
    import torch

    residual = torch.as_tensor(x)
    for level, centroids in enumerate(tokenizer.codebooks):
        residual = residual - centroids[torch.as_tensor(tokenizer.raw_codes[:, level])]
    return float((residual ** 2).sum(1).mean())


def test_faiss_engine_gives_codes_as_good_as_torch():
    pytest.importorskip("faiss")
    x = embeddings()
    params = {"levels": 3, "codebook_size": 16, "iterations": 10}
    torch_ids = RQKMeans(SemanticIdParams(**params)).fit(x)
    faiss_ids = RQKMeans(SemanticIdParams(**params, engine="faiss")).fit(x)
    assert faiss_ids.report()["uniqueness"] == 1.0 and faiss_ids.codes.shape == (1500, 3)
    assert (faiss_ids.encode(x[:50]) == faiss_ids.raw_codes[:50]).all()
    # other centroids, the same quality: residual error within 5% of the torch engine's
    assert _quantisation_error(faiss_ids, x) == pytest.approx(_quantisation_error(torch_ids, x), rel=0.05)


def test_faiss_engine_without_faiss_says_what_to_install(monkeypatch):
    import sys

    from reasonrl.core.errors import ReasonRLError

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ReasonRLError, match="pip install faiss-cpu"):
        RQKMeans(SemanticIdParams(levels=2, codebook_size=4, engine="faiss")).fit(embeddings(100))
