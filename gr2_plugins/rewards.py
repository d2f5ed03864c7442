"""GR2's verifiable reranking rewards and the conditional combiner.

Every reward reads ``example["candidates"]`` (SIDs in the pre-ranker's order) and
``example["target_index"]`` (0-based position of the held-out item in that list).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from pydantic import Field

from reasonrl.core.registry import Params
from reasonrl.gr2_plugins.parsing import parse_answer
from reasonrl.gr2_plugins.prompts import hint_leaders


class ConditionalRankParams(Params):
    alpha: float = Field(0.2, ge=0, description="weight of the format bonus")
    invalid_reward: float = -1.0
    """reward of an answer that is not a permutation of the candidates"""
    count_kept_first: bool = Field(True, description="a target already first and kept first also earns the bonus")


class RankGainParams(Params):
    k: int = Field(10, gt=0, description=(
        "NDCG cut-off; 10 (the whole default list) rewards every move of the target. With partial answers "
        "(index_list max_items), k = max_items pays only hits: a larger k also pays a miss for listing the "
        "input's top candidates, which keeps the target where it was, and so pulls the policy to the input order"))


class TopKParams(Params):
    k: int = Field(3, gt=0)
    """the answer is rewarded when the held-out item is in its first k"""


def positions(completion: str, example: Mapping) -> tuple[int, int, int] | None:
    """(1-based input position, 1-based output position, |D|) of the target, None if invalid."""
    parsed = parse_answer(completion, example)
    if not parsed.valid:
        return None
    target = example["target_index"]
    return target + 1, parsed.order.index(target) + 1, len(example["candidates"])


def rank_reward(pos_in: int, pos_out: int, size: int) -> float:
    """R_rank = (pos_in - pos_out) / |D|: moving the target from 4 to 1 in 10 gives +0.3."""
    return (pos_in - pos_out) / size


class RankReward:
    """R_rank, plus whether the target was first in the input and kept first."""

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        out = []
        for completion, example in zip(completions, examples):
            pos = positions(completion, example)
            if pos is None:
                out.append({"rank": None, "kept_first": None})
            else:
                out.append({"rank": rank_reward(*pos), "kept_first": float(pos[0] == 1 and pos[1] == 1)})
        return out


def input_order_behaviour(order: Sequence[int]) -> dict[str, float]:
    """How much of the input order a valid answer keeps: all of it (identity_copy), its first
    item first (first_kept), and Kendall's tau between the answer and the input order
    (input_tau: 1 a copy, -1 the reverse) - partial copying shows in the last two first."""
    from scipy.stats import kendalltau

    n = len(order)
    return {"identity_copy": float(list(order) == list(range(n))), "first_kept": float(order[0] == 0),
            "input_tau": float(kendalltau(range(n), order).statistic) if n > 1 else 1.0}


def co_watching_behaviour(order: Sequence[int], evidence: Sequence[Mapping]) -> dict[str, float]:
    """Whether a valid answer follows the co-watching rule: its first candidate is the one most
    watched right after the last film (co_watching_first), and its first three are that rule's top
    three in order (co_watching_top3): what a student reading the evidence hint copies."""
    leaders = [n - 1 for n in hint_leaders(evidence)]
    return {"co_watching_first": float(order[0] == leaders[0]),
            "co_watching_top3": float(list(order[:len(leaders)]) == leaders)}


class RankingBehaviour:
    """Not a reward: per valid answer, :func:`input_order_behaviour`, whether a target that was
    first stays first (kept_first, None when it was not first) and, for examples with evidence,
    :func:`co_watching_behaviour`. Log it with the rl stage's ``metrics`` to watch the copying the
    conditional reward targets and how closely the policy follows the evidence."""

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        out = []
        for completion, example in zip(completions, examples):
            parsed = parse_answer(completion, example)
            evidence = example.get("evidence")
            if not parsed.valid:
                out.append({"identity_copy": None, "first_kept": None, "input_tau": None, "kept_first": None,
                            **({"co_watching_first": None, "co_watching_top3": None} if evidence else {})})
                continue
            first = example["target_index"] == 0
            out.append({**input_order_behaviour(parsed.order),
                        "kept_first": float(parsed.order[0] == 0) if first else None,
                        **(co_watching_behaviour(parsed.order, evidence) if evidence else {})})
        return out


class CoWatchingCopyReward:
    """``co_watching_copy``: 1 if a valid answer's first candidates are the co-watching rule's top
    three in order (what the ``co_watching`` teacher answers), else 0; None when invalid. It does not
    read the target, so it is not a ranking reward: it is a noiseless signal for asking whether RL can
    move a student towards an answer at all (``bench/gr2_rl_probe.py``), or for distilling the teacher
    on the student's own samples. Needs examples with ``evidence`` (``gr2_prepare`` prompt_evidence)."""

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        out = []
        for completion, example in zip(completions, examples):
            if not example.get("evidence"):
                raise ValueError(f"co_watching_copy: example of user {example.get('user')!r} has no 'evidence'; "
                                 "prepare the data with gr2_prepare prompt_evidence: true")
            parsed = parse_answer(completion, example)
            out.append({"co_watching_copy": co_watching_behaviour(parsed.order, example["evidence"])["co_watching_top3"]
                        if parsed.valid else None})
        return out


class FormatReward:
    """1 if the answer parses and is a permutation of the candidates, else 0."""

    def __init__(self, params=None) -> None:
        self.params = params

    def __call__(self, prompts, completions, examples):
        return [{"format": float(parse_answer(c, e).valid)} for c, e in zip(completions, examples)]


class _PositionReward:
    """A component computed from the target's output position; None when the answer is invalid."""

    component = ""

    def __init__(self, params=None) -> None:
        self.params = params

    def value(self, pos_out: int, size: int) -> float:
        raise NotImplementedError

    def __call__(self, prompts, completions, examples):
        out = []
        for completion, example in zip(completions, examples):
            pos = positions(completion, example)
            out.append({self.component: None if pos is None else self.value(pos[1], pos[2])})
        return out


class AUCReward(_PositionReward):
    """Share of the other candidates ranked below the target: (|D| - pos_out) / (|D| - 1)."""

    component = "auc"

    def value(self, pos_out: int, size: int) -> float:
        return (size - pos_out) / max(size - 1, 1)


class NDCGReward(_PositionReward):
    """NDCG of the output list with one relevant item: 1 / log2(1 + pos_out)."""

    component = "ndcg"

    def value(self, pos_out: int, size: int) -> float:
        return 1.0 / math.log2(1 + pos_out)


class TopKReward(_PositionReward):
    """1 if the target lands in the output's top k (the OneRec-Think-style baseline's reward)."""

    component = "topk"

    def value(self, pos_out: int, size: int) -> float:
        return float(pos_out <= self.params.k)


def ndcg_gain(pos_in: int, pos_out: int, k: int) -> float:
    """NDCG@k of the answer minus NDCG@k of the input order (one relevant item): zero for a
    copy, positive only where the answer beats the list it was given.

    >>> round(ndcg_gain(4, 1, 10), 4)   # 1 - 1/log2(5)
    0.5693
    """
    def ndcg(pos: int) -> float:
        return 1.0 / math.log2(1 + pos) if pos <= k else 0.0

    return ndcg(pos_out) - ndcg(pos_in)


class RankGainReward:
    """``rank_gain``: the NDCG@k improvement of the answer over the input order."""

    def __init__(self, params: RankGainParams | None = None) -> None:
        self.params = params or RankGainParams()

    def __call__(self, prompts, completions, examples):
        out = []
        for completion, example in zip(completions, examples):
            pos = positions(completion, example)
            out.append({"rank_gain": None if pos is None else ndcg_gain(pos[0], pos[1], self.params.k)})
        return out


class ConditionalRank:
    """GR2's conditional verifiable reward.

    invalid output -> ``invalid_reward``; otherwise R_rank + alpha * R_fmt when the target
    moved up (R_rank > 0) or — with ``count_kept_first`` — was first and stayed first;
    else R_rank alone, so copying the input order earns no format bonus.
    """

    def __init__(self, params: ConditionalRankParams) -> None:
        self.params = params

    def combine(self, components: Mapping[str, float | None]) -> float:
        p = self.params
        rank, fmt = components.get("rank"), components.get("format")
        if rank is None or not fmt:
            return p.invalid_reward
        earned = rank > 0 or (p.count_kept_first and components.get("kept_first") == 1.0)
        return rank + p.alpha * fmt if earned else rank
