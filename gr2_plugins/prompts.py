"""Prompts for the student reranker and the teacher that writes its reasoning traces."""

from __future__ import annotations

import json
from typing import Mapping, Sequence

ANSWER_FORMAT = '{"explanation": "...", "recommendations": [SID, SID, ...]}'


def item_line(item: Mapping) -> str:
    return f"{item['sid']} {item['title']} ({item['year']}) | {', '.join(item['genres'])}"


def student_prompt(history: Sequence[Mapping], candidates: Sequence[Mapping]) -> str:
    lines = ["Rerank movies for a viewer.", "Watched, oldest to newest:"]
    lines += [item_line(i) for i in history]
    lines += ["Candidates:"] + [item_line(i) for i in candidates]
    lines.append(f"Reason briefly, citing movies by SID, then answer {ANSWER_FORMAT} ranking all "
                 f"{len(candidates)} candidates, most likely next watch first.")
    return "\n".join(lines)


TEACHER_ROLE = ("You are an expert film recommender who reranks a shortlist for one viewer. You know how "
                "tastes evolve: viewers continue franchises and sequels, stay within favourite genres and "
                "eras, follow a recent binge, and return to acclaimed classics.")


def teacher_prompt(history: Sequence[Mapping], candidates: Sequence[Mapping], target: Mapping | None = None) -> str:
    """The teacher's prompt. With ``target`` it is targeted sampling: the answer is shown."""
    lines = [TEACHER_ROLE, "", "The viewer watched, oldest to newest:"]
    lines += [item_line(i) for i in history]
    lines += ["", "Candidates from the upstream ranker:"] + [item_line(i) for i in candidates]
    if target is not None:
        lines += ["", f"The viewer actually watched {target['sid']} next; explain why it fits best."]
    lines += ["", "Think in steps: 1) summarise the viewer's tastes, 2) judge each candidate against them, "
              "citing every movie by its SID, 3) order all candidates. End with only this JSON: " + ANSWER_FORMAT]
    return "\n".join(lines)


INDEX_ANSWER_FORMAT = '{"explanation": "...", "recommendations": [N, N, ...]}'


EVIDENCE_KEYS = ("after_last", "near_recent", "recent_views")


def evidence_ranks(evidence: Sequence[Mapping]) -> list[dict[str, int]]:
    """Each candidate's rank among the list on each piece of evidence (1 = the most; ties share)."""
    return [{key: 1 + sum(other[key] > mine[key] for other in evidence) for key in EVIDENCE_KEYS}
            for mine in evidence]


LEADER_TITLES = {"after_last": "Most watched right after your last film",
                 "near_recent": "Most watched near your recent films",
                 "recent_views": "Most viewed in the last 4 weeks"}


def leaders(evidence: Sequence[Mapping], key: str, top: int = 3) -> list[tuple[int, int]]:
    """(candidate number, count) of the ``top`` candidates with the most ``key`` evidence
    (ties in input order), those with a count of 0 left out."""
    order = sorted(range(len(evidence)), key=lambda i: (-evidence[i][key], i))
    return [(i + 1, evidence[i][key]) for i in order[:top] if evidence[i][key] > 0]


def leaders_line(key: str, pairs: Sequence[tuple[int, int]]) -> str:
    """``Most watched right after your last film: [3] 34, [6] 12, [7] 9`` (``none`` without any)."""
    return f"{LEADER_TITLES[key]}: " + (", ".join(f"[{n}] {count}" for n, count in pairs) or "none")


def evidence_summary(evidence: Sequence[Mapping]) -> list[str]:
    """One line per piece of evidence naming its leaders: which candidates stand out is written
    as a short list a student can copy from, not spread over ten candidate lines."""
    return ["What the logs say, most first:"] + [leaders_line(key, leaders(evidence, key)) for key in EVIDENCE_KEYS]


HINT_TITLE = "Most watched right after your last film"


def hint_leaders(evidence: Sequence[Mapping], top: int = 3) -> list[int]:
    """The ``top`` candidate numbers most watched right after the last film, zero counts included
    (ties in input order): always ``top`` numbers, so the hint line has one shape."""
    order = sorted(range(len(evidence)), key=lambda i: (-evidence[i]["after_last"], i))
    return [i + 1 for i in order[:top]]


def hint_numbers(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def hint_line(evidence: Sequence[Mapping]) -> str:
    """``Most watched right after your last film (78, 69, 50 viewers): 4, 1, 3``, the prompt's last
    line: the numbers end the prompt, so an answer repeating them copies tokens a fixed distance back
    (a lookup by position, which a small student learns; a lookup by content it does not, see
    ``bench/gr2_copy_probe.py``)."""
    numbers = hint_leaders(evidence)
    counts = ", ".join(str(evidence[n - 1]["after_last"]) for n in numbers)
    return f"{HINT_TITLE} ({counts} viewers): {hint_numbers(numbers)}"


def evidence_text(evidence: Mapping, last_title: str | None, ranks: Mapping[str, int] | None = None) -> str:
    """What the logs say about one candidate, in words a trace can repeat; with ``ranks``, each
    count also says where it stands in the list, so the comparison is written on the line."""
    def rank(key: str) -> str:
        return f" (rank {ranks[key]})" if ranks else ""

    parts = []
    if last_title:
        parts.append(f"right after {last_title}: {evidence['after_last']} viewers{rank('after_last')}")
    parts.append(f"near your recent films: {evidence['near_recent']}{rank('near_recent')}")
    parts.append(f"views in the last 4 weeks: {evidence['recent_views']}{rank('recent_views')}")
    return "; ".join(parts)


def numbered_lines(candidates: Sequence[Mapping], evidence: Sequence[Mapping] | None = None,
                   last_title: str | None = None, scores: Sequence[float] | None = None,
                   ranked: bool = False) -> list[str]:
    """``[n] <sid> Title (year) | genres`` per candidate (n = the upstream ranker's position),
    with the logs' evidence (and its ranks, ``ranked``) and the evidence model's score where given."""
    lines = []
    ranks = evidence_ranks(evidence) if evidence is not None and ranked else None
    for n, item in enumerate(candidates, start=1):
        line = f"[{n}] {item_line(item)}"
        if evidence is not None:
            line += f" | {evidence_text(evidence[n - 1], last_title, ranks[n - 1] if ranks else None)}"
        if scores is not None:
            line += f" | score: {scores[n - 1]:.3f}"
        lines.append(line)
    return lines


def index_student_prompt(history: Sequence[Mapping], candidates: Sequence[Mapping],
                         evidence: Sequence[Mapping] | None = None, ranked: bool = False,
                         summary: bool = False, evidence_lines: bool = True, hint: bool = False) -> str:
    """The student's prompt when it answers with candidate numbers (``answer_format: index``);
    ``evidence_lines=False`` keeps the counts off the candidate lines (then only ``summary`` shows them);
    ``hint`` ends the prompt with the co-watching leaders (``hint_line``)."""
    last = history[-1]["title"] if history else None
    lines = ["Rerank movies for a viewer.", "Watched, oldest to newest:"]
    lines += [item_line(i) for i in history]
    lines += ["Candidates, best first by the upstream ranker:"] + numbered_lines(
        candidates, evidence if evidence_lines else None, last, ranked=ranked)
    if evidence is not None and summary:
        lines += evidence_summary(evidence)
    lines.append(f"Reason briefly, citing candidates by number, then answer {INDEX_ANSWER_FORMAT} with the numbers "
                 f"of the most likely next watches first; unlisted candidates keep their order.")
    if evidence is not None and hint:
        lines.append(hint_line(evidence))
    return "\n".join(lines)


def index_teacher_prompt(history: Sequence[Mapping], candidates: Sequence[Mapping], evidence: Sequence[Mapping],
                         scores: Sequence[float], target: Mapping | None = None, ranked: bool = False,
                         summary: bool = False, hint: bool = False) -> str:
    """The teacher's prompt for index answers: the student's view plus the evidence model's score."""
    last = history[-1]["title"] if history else None
    lines = [TEACHER_ROLE, "", "The viewer watched, oldest to newest:"]
    lines += [item_line(i) for i in history]
    lines += ["", "Candidates from the upstream ranker, with what the viewing logs say:"]
    lines += numbered_lines(candidates, evidence, last, scores, ranked)
    if summary:
        lines += evidence_summary(evidence)
    if target is not None:
        lines += ["", f"The viewer actually watched [{candidates.index(target) + 1}] next; explain why it fits best."]
    lines += ["", "Think in steps: weigh each candidate's evidence, citing candidates by number, then end with "
              "only this JSON, best first: " + INDEX_ANSWER_FORMAT]
    if hint:
        lines.append(hint_line(evidence))
    return "\n".join(lines)


def split_trace(text: str) -> tuple[str, str] | None:
    """(reasoning, JSON answer) of a trace: the answer is its last JSON object."""
    end = text.rfind("}")
    start = text.rfind('{"explanation"', 0, end + 1)
    if start == -1:
        start = text.rfind("{", 0, end + 1)
    if start == -1 or end == -1:
        return None
    return text[:start], text[start:end + 1]


def answer_json(explanation: str, sids: Sequence[str]) -> str:
    return json.dumps({"explanation": explanation, "recommendations": list(sids)}, ensure_ascii=False)
