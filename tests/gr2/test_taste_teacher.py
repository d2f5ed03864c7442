import json

import pytest

from reasonrl.core.errors import ReasonRLError
from reasonrl.gr2_plugins.filters import Top1Match, ValidFormat
from reasonrl.gr2_plugins.taste_teacher import TasteTeacherParams
from reasonrl.gr2_plugins.parsing import parse_ranking
from reasonrl.gr2_plugins.prompts import teacher_prompt
from reasonrl.gr2_plugins.taste_teacher import TasteProfileTeacher, genre_profile, parse_movie, read_prompt


def movie(i, title, year, genres):
    return {"sid": f"<|sid_begin|><s_a_{i}><|sid_end|>", "title": title, "year": year, "genres": genres}


HISTORY = [movie(1, "Alien", "1979", ["Horror", "Sci-Fi"]), movie(2, "Aliens", "1986", ["Action", "Sci-Fi"])]
CANDS = [movie(3, "Babe", "1995", ["Children's", "Comedy"]), movie(4, "Alien 3", "1992", ["Action", "Sci-Fi"]),
         movie(5, "Scream", "1996", ["Horror", "Thriller"])]
EXAMPLE = {"candidates": [c["sid"] for c in CANDS], "target_index": 2}


def test_reads_the_prompt_it_is_given():
    history, candidates, target = read_prompt(teacher_prompt(HISTORY, CANDS))
    assert [m.title for m in history] == ["Alien", "Aliens"] and target is None
    assert [m.genres for m in candidates][1] == ["Action", "Sci-Fi"] and candidates[0].year == 1995
    assert read_prompt(teacher_prompt(HISTORY, CANDS, target=CANDS[2]))[2] == CANDS[2]["sid"]
    odd = parse_movie("<|sid_begin|><s_a_9><|sid_end|> City of Lost Children, The (La Cite) (1995) | Drama")
    assert odd.title == "City of Lost Children, The (La Cite)" and odd.year == 1995
    with pytest.raises(ReasonRLError, match="no candidate lines"):
        read_prompt("rank these movies please")


def test_genre_profile_weights_recent_items_more():
    history, _, _ = read_prompt(teacher_prompt(HISTORY, CANDS))
    profile = genre_profile(history, decay=0.5)
    # newest (Aliens) weighs 1, Alien 0.5: Sci-Fi 1.5, Action 1, Horror 0.5, over a total of 3
    assert profile == pytest.approx({"Sci-Fi": 0.5, "Action": 1 / 3, "Horror": 1 / 6})


def test_noise_free_order_follows_the_profile_and_the_trace_is_valid():
    teacher = TasteProfileTeacher(TasteTeacherParams(temperature=0.0, prior_weight=0.0, era_weight=0.0))
    trace = teacher.generate([teacher_prompt(HISTORY, CANDS)], 1)[0][0]
    order = parse_ranking(trace, EXAMPLE["candidates"]).order
    assert order == [1, 2, 0]  # Alien 3 (Action+Sci-Fi) > Scream (Horror) > Babe (nothing shared)
    assert ValidFormat().check(EXAMPLE, trace).accepted and not Top1Match().check(EXAMPLE, trace).accepted
    assert CANDS[1]["sid"] + " Alien 3" in trace.split("{")[0]  # the reasoning cites by SID


def test_targeted_mode_puts_the_target_first_and_noise_varies_samples():
    teacher = TasteProfileTeacher(TasteTeacherParams(temperature=0.0))
    trace = teacher.generate([teacher_prompt(HISTORY, CANDS, target=CANDS[2])], 1)[0][0]
    assert Top1Match().check(EXAMPLE, trace).accepted
    noisy = TasteProfileTeacher(TasteTeacherParams(temperature=5.0, seed=1))
    orders = {tuple(parse_ranking(t, EXAMPLE["candidates"]).order)
              for t in noisy.generate([teacher_prompt(HISTORY, CANDS)], 20)[0]}
    assert len(orders) > 1
    again = TasteProfileTeacher(TasteTeacherParams(temperature=5.0, seed=1))
    assert again.generate([teacher_prompt(HISTORY, CANDS)], 20)[0] == \
        TasteProfileTeacher(TasteTeacherParams(temperature=5.0, seed=1)).generate([teacher_prompt(HISTORY, CANDS)], 20)[0]
    assert json.loads(trace.splitlines()[-1])["recommendations"][0] == CANDS[2]["sid"]


def test_copy_share_makes_a_teacher_that_copies_the_input_order():
    prompt = teacher_prompt(HISTORY, CANDS, target=CANDS[2])  # targeted: the honest answer puts Scream first
    identity = list(range(len(CANDS)))

    def orders(copy_share):
        teacher = TasteProfileTeacher(TasteTeacherParams(temperature=1.0, copy_share=copy_share, seed=1))
        return [parse_ranking(t, EXAMPLE["candidates"]).order for t in teacher.generate([prompt], 200)[0]]

    assert all(order == identity for order in orders(1.0))
    honest = orders(0.0)
    assert all(order[0] == 2 for order in honest)  # never a copy: the target leads
    half = orders(0.5)
    copies = sum(order == identity for order in half)
    assert 70 <= copies <= 130  # about half of 200 samples (binomial, 4.2 standard deviations)
