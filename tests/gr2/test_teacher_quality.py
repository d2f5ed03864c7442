import math
import sys
from pathlib import Path

import pytest

from reasonrl.gr2_plugins.prompts import teacher_prompt

sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "bench"), str(Path(__file__).resolve().parent)]
from gr2_teacher_quality import teacher_ndcg  # noqa: E402
from test_taste_teacher import CANDS, HISTORY  # noqa: E402


def one_list(target_index):
    return {"user": "u", "teacher_prompt": teacher_prompt(HISTORY, CANDS), "candidates": [c["sid"] for c in CANDS],
            "target_index": target_index}


def test_teacher_ndcg_follows_the_teachers_noise_free_order():
    # decay 0.7: Sci-Fi 0.5, Action 1/3.4, Horror 0.7/3.4; era weight 0.3 around 1982.5. Scores without
    # the prior: Alien 3 0.794 - 0.1425, Scream 0.206 - 0.2025, Babe 0 - 0.1875: order Alien 3, Scream, Babe
    assert teacher_ndcg([one_list(1)], prior_weight=0.0) == pytest.approx(1.0)
    assert teacher_ndcg([one_list(2)], prior_weight=0.0) == pytest.approx(1 / math.log2(3))
    assert teacher_ndcg([one_list(1), one_list(0)], prior_weight=0.0) == pytest.approx((1.0 + 0.5) / 2)


def test_a_large_prior_weight_keeps_the_input_order():
    assert teacher_ndcg([one_list(2)], prior_weight=100.0) == pytest.approx(0.5)
    assert teacher_ndcg([one_list(0)], prior_weight=100.0) == pytest.approx(1.0)
