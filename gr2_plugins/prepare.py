"""The ``gr2_prepare`` stage: data -> pre-ranker lists -> semantic IDs -> prompts and corpus."""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any, Literal

import numpy as np

from pydantic import Field, model_validator

from reasonrl.core.config import ItemTokenizerRef
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.contracts import StageContext
from reasonrl.core.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from reasonrl.core.registry import Params
from reasonrl.gr2_plugins.data import (
    Interactions,
    InteractionsTableParams,
    Item,
    UserSplit,
    leave_one_out,
    load_interactions_table,
    load_movielens,
)
from reasonrl.gr2_plugins.features import FEATURES, SequenceStats, shifted_sequences
from reasonrl.gr2_plugins.metrics import ranking_metrics
from reasonrl.gr2_plugins.preranker import ItemKNN, ItemKNNParams
from reasonrl.gr2_plugins.prompts import (
    index_student_prompt,
    index_teacher_prompt,
    student_prompt,
    teacher_prompt,
)


class GR2PrepareParams(Params):
    """Data, pre-ranker, semantic IDs, prompts and the mid-training corpus."""

    dataset: Literal["movielens_100k", "movielens_1m", "table"] = Field(
        "movielens_100k", description="a fetched MovieLens, or 'table': your interactions (see table)")
    path: str | None = Field(None, description="folder with ml-*.inter/.item instead of fetching")
    table: InteractionsTableParams | None = Field(None, description="your interactions table (dataset: table)")
    min_rating: float = Field(0.0, description="drop interactions rated below this (MovieLens, or table.rating_column)")
    k_core: int = Field(5, ge=1, description="keep users and items with at least k interactions, repeatedly")
    candidates: int = Field(10, ge=2, description="the pre-ranker's top-k list the student reranks")
    history_items: int = Field(10, ge=1, description="most recent history items shown in a prompt")
    preranker: ItemKNNParams = Field(default_factory=ItemKNNParams)
    """the item-kNN pre-ranker that proposes the candidates"""
    tokenizer: ItemTokenizerRef = Field(default_factory=lambda: ItemTokenizerRef(
        name="rq_kmeans", params={"levels": 4, "codebook_size": 64}))
    """the item tokenizer that turns item embeddings into semantic IDs"""
    max_users: dict[str, int] = Field(default_factory=dict, description="cap per split, e.g. {train: 200, test: 100}")
    embedding_model_path: str | None = None
    """a local sentence-encoder folder for item embeddings (default: the packaged all-MiniLM-L6-v2)"""
    train_targets_per_user: int = Field(1, ge=1, description=(
        "training examples per user: its last k training items each become a target (more SFT/RL data)"))
    corpus_windows: int = Field(3, ge=0, description="history->next examples per user in the mid-training corpus")
    answer_format: Literal["sid", "index"] = Field("sid", description=(
        "sid: the answer lists every candidate's semantic ID (the paper's); index: candidates are numbered in the "
        "pre-ranker's order and the answer lists numbers, best first, possibly only the top few"))
    prompt_evidence: bool = Field(False, description=(
        "index prompts: show what the logs say about each candidate (co-watching with the last films, recent views)"))
    evidence_ranks: bool = Field(False, description=(
        "with prompt_evidence: each count also gives its rank among the list's candidates, so comparing "
        "candidates is written on each line"))
    evidence_summary: bool = Field(False, description=(
        "with prompt_evidence: after the candidates, one line per piece of evidence names its three leaders "
        "('Most watched right after your last film: [3] 34, [6] 12, [7] 9'), a list the answer can copy from"))
    evidence_lines: bool = Field(True, description=(
        "with prompt_evidence: each candidate's line carries its counts in words; false with evidence_summary: "
        "only the summary lines (a prompt half as long)"))
    evidence_hint: bool = Field(False, description=(
        "with prompt_evidence: the prompt ends with the three candidates most watched right after the last film "
        "('Most watched right after your last film (78, 69, 50 viewers): 4, 1, 3'), always three numbers, last, so "
        "an answer copies them by position"))
    seed: int = Field(0, description="seed of the user caps and the corpus windows")
    progress: bool = Field(True, description="show progress bars")

    @model_validator(mode="after")
    def _table_with_its_source(self):
        if (self.dataset == "table") != (self.table is not None):
            raise ValueError("give table: {data_files: ..., ...} exactly when dataset is 'table'")
        return self


def list_cuts(splits: dict[str, UserSplit], train_targets: int = 1) -> list[tuple[str, str, int]]:
    """(split, user, cut) per list: its target is the ``cut``-th item from the end of the user's
    sequence and its history everything before. Test: the last item (cut 1); validation: the
    second-to-last (2); train: each of the ``train_targets`` items before those (3, 4, ...)."""
    out = []
    for user, s in splits.items():
        out += [("train", user, back + 2) for back in range(1, min(train_targets, len(s.train) - 1) + 1)]
        out += [("validation", user, 2), ("test", user, 1)]
    return out


def split_summary(split: str, examples: list[dict], coverage: float) -> dict[str, Any]:
    """Coverage, list count, the target's mean input position and (held-out splits) the
    pre-ranker's metrics: train lists built like validation ones show the same numbers."""
    out: dict[str, Any] = {f"coverage/{split}": coverage, f"examples/{split}": len(examples),
                           f"target_position/{split}": sum(e["target_index"] + 1 for e in examples) / max(len(examples), 1)}
    if split != "train":
        baseline = ranking_metrics([e["candidate_ids"] for e in examples], [e["target"] for e in examples])
        out.update({f"preranker/{split}/{k}": v for k, v in baseline.items()})
    return out


class EvidenceModel:
    """A logistic regression over :data:`FEATURES` (standardised) that scores how likely each
    candidate is the next watch: the ``feature_ranker`` teacher's judgement."""

    def __init__(self, mean, scale, weights, bias) -> None:
        self.mean, self.scale = np.asarray(mean), np.asarray(scale)
        self.weights, self.bias = np.asarray(weights), float(bias)

    def scores(self, features) -> list[float]:
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return (z @ self.weights + self.bias).tolist()

    def describe(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias}

    @classmethod
    def from_description(cls, saved: dict[str, Any]) -> "EvidenceModel":
        """The model :meth:`describe` wrote (``prepare/evidence_model.json``)."""
        return cls(saved["mean"], saved["scale"], saved["weights"], saved["bias"])


def fit_evidence_model(built: dict) -> EvidenceModel:
    from sklearn.linear_model import LogisticRegression

    rows = [(f, float(i == e["target_index"])) for e in built["examples"] for i, f in enumerate(e["features"])]
    if not rows:
        raise ReasonRLError("gr2_prepare: no training list holds its target, so the evidence model behind "
                            "answer_format: index has nothing to fit; raise train_targets_per_user or candidates")
    x = np.array([r[0] for r in rows], dtype=np.float64)
    y = np.array([r[1] for r in rows])
    mean, scale = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
    model = LogisticRegression(max_iter=2000).fit((x - mean) / scale, y)
    return EvidenceModel(mean, scale, model.coef_[0], model.intercept_[0])


class GR2Prepare:
    """Loads MovieLens, builds top-k lists with the pre-ranker, semantic IDs, prompts and corpus."""

    @staticmethod
    def data_cards(entry: dict) -> list[tuple[str, str, str]]:
        """(name, description, licence) of the data a stage configured as ``entry`` reads (model cards)."""
        source = entry.get("dataset", GR2PrepareParams.model_fields["dataset"].default)
        if source == "table":
            return [("table", "your interactions table", "state your data's licence")]
        return [(source, "MovieLens (GroupLens)", "research use only, no redistribution of the data")]

    def __init__(self, params: GR2PrepareParams) -> None:
        self.params = params

    def run(self, context: StageContext) -> dict[str, Any]:
        p = self.params
        data = (load_interactions_table(p.table, p.min_rating) if p.dataset == "table"
                else load_movielens(p.dataset, p.path, p.min_rating)).k_core(p.k_core)
        splits = leave_one_out(data.sequences, data.times)
        catalog = sorted({i for s in splits.values() for i in s.sequence})
        items, sid_report = self.semantic_ids(context, data, catalog)
        out = context.stage_dir
        summary: dict[str, Any] = {"dataset": p.dataset, "users": len(splits), "items": len(catalog),
                                   "sid_uniqueness": sid_report["uniqueness"],
                                   "sid_uniqueness_raw": sid_report.get("uniqueness_raw")}
        lists = self.build_lists(splits, catalog, items)
        scorer = fit_evidence_model(lists["train"]) if p.answer_format == "index" else None
        rng = random.Random(p.seed)
        for split, built in lists.items():
            examples = [self.render(e, items, scorer) for e in built["examples"]]
            cap = p.max_users.get(split)
            if cap is not None and len(examples) > cap:
                examples = rng.sample(examples, cap)
            atomic_write_jsonl(out / f"{split}.jsonl", examples)
            summary.update(split_summary(split, examples, built["coverage"]))
        if scorer is not None:
            atomic_write_json(out / "evidence_model.json", scorer.describe())
            self.serving_stats.save(out)  # the test lists' counts: what rerank shows a served model
        atomic_write_jsonl(out / "items.jsonl", [items[i] for i in catalog])
        atomic_write_jsonl(out / "corpus.jsonl", self.corpus(splits, items, rng))
        atomic_write_json(out / "summary.json", summary)
        return summary

    def build_lists(self, splits: dict[str, UserSplit], catalog: list[str], items: dict[str, dict]) -> dict:
        """The pre-ranker's lists per split; the statistics behind each list are fit on every
        user's sequence cut where that list's target sits (see :func:`shifted_sequences`)."""
        from tqdm.auto import tqdm

        p = self.params
        by_cut: dict[int, list[tuple[str, str]]] = {}
        for split, user, cut in list_cuts(splits, p.train_targets_per_user):
            by_cut.setdefault(cut, []).append((split, user))
        sequences = {u: s.sequence for u, s in splits.items()}
        times = {u: s.times or [float(i) for i in range(len(s.sequence))] for u, s in splits.items()}
        lists = {split: {"examples": [], "triples": 0} for split in ("train", "validation", "test")}
        for cut in tqdm(sorted(by_cut), desc="pre-ranker fits", disable=not p.progress):
            seen, seen_times = shifted_sequences(sequences, times, cut)
            knn = ItemKNN(**p.preranker.model_dump()).fit(list(seen.values()), catalog)
            stats = SequenceStats(window=p.preranker.window).fit(seen, seen_times, catalog, items)
            if cut == 1:
                self.serving_stats = stats
            for split, user in by_cut[cut]:
                lists[split]["triples"] += 1
                example = self.build_list(user, sequences[user], times[user], cut, knn, stats)
                if example is not None:
                    lists[split]["examples"].append(example)
        for built in lists.values():
            built["coverage"] = len(built["examples"]) / max(built.pop("triples"), 1)
        return lists

    def build_list(self, user: str, sequence: list[str], times: list[float], cut: int, knn: ItemKNN,
                   stats: SequenceStats) -> dict | None:
        history, target = sequence[:-cut], sequence[-cut]
        scores = knn.scores(history)
        candidates = knn.top_k(history, self.params.candidates)
        if target not in candidates:
            return None
        until = times[-cut - 1]
        features = stats.features(history, until, candidates, [float(scores[knn.index[c]]) for c in candidates])
        evidence = [asdict(stats.evidence(history, until, c)) for c in candidates]
        return {"user": user, "history": history, "target": target, "candidate_ids": candidates,
                "target_index": candidates.index(target), "same_second": times[-cut] == until, "until": until,
                "features": features.round(6).tolist(), "evidence": evidence}

    def render(self, example: dict, items: dict[str, dict], scorer: "EvidenceModel | None") -> dict:
        """The example with its candidates' SIDs and the student's and teacher's prompts."""
        p = self.params
        shown = [items[i] for i in example["history"][-p.history_items:]]
        cands = [items[i] for i in example["candidate_ids"]]
        target = items[example["target"]]
        out = {**example, "history": example["history"][-p.history_items:], "candidates": [c["sid"] for c in cands],
               "answer_format": p.answer_format}
        if p.answer_format == "sid":
            return {**out, "prompt": student_prompt(shown, cands), "teacher_prompt": teacher_prompt(shown, cands),
                    "teacher_prompt_targeted": teacher_prompt(shown, cands, target=target)}
        evidence = example["evidence"]
        scores = scorer.scores(example["features"])
        ranked, summary = p.evidence_ranks, p.evidence_summary and p.prompt_evidence
        hint = p.evidence_hint and p.prompt_evidence
        shown_evidence = evidence if p.prompt_evidence else None
        lines = p.evidence_lines or not summary
        return {**out, "prompt": index_student_prompt(shown, cands, shown_evidence, ranked, summary, lines, hint),
                "teacher_prompt": index_teacher_prompt(shown, cands, evidence, scores, ranked=ranked, summary=summary,
                                                       hint=hint),
                "teacher_prompt_targeted": index_teacher_prompt(shown, cands, evidence, scores, target, ranked,
                                                                summary, hint)}

    def semantic_ids(self, context: StageContext, data: Interactions, catalog: list[str]):
        from reasonrl.gr2_plugins.embeddings import embed_texts

        vectors = embed_texts([data.items[i].text for i in catalog], self.params.embedding_model_path,
                              progress=self.params.progress)
        tokenizer = context.build(self.params.tokenizer).fit(vectors)
        sids = tokenizer.tokens(tokenizer.codes)
        items = {}
        for item_id, sid in zip(catalog, sids):
            item = data.items[item_id]
            items[item_id] = {"id": item_id, "sid": sid, "title": item.title, "year": item.year, "genres": item.genres}
        report = tokenizer.report()
        atomic_write_json(context.stage_dir / "sid_report.json", report)
        atomic_write_text(context.stage_dir / "sid_tokens.txt", "\n".join(tokenizer.vocabulary()) + "\n")
        return items, report

    def corpus(self, splits: dict[str, UserSplit], items: dict[str, dict], rng: random.Random) -> list[dict]:
        """The four alignment tasks: history codes -> next code; code <-> text; titles -> next
        item; plain descriptions."""
        rows = []
        for item in items.values():
            text = Item(item["id"], item["title"], item["year"], item["genres"]).text
            rows.append({"text": f"{item['sid']} is {text}."})
            rows.append({"text": f"The movie {text} has the ID {item['sid']}."})
            if item["genres"] and item["year"]:
                rows.append({"text": f"{item['title']} is a {' and '.join(item['genres']).lower()} film from "
                                     f"{item['year']}."})
        n = self.params.history_items
        for sequence in (s.train for s in splits.values()):
            for _ in range(self.params.corpus_windows):
                if len(sequence) < 3:
                    break
                end = rng.randrange(2, len(sequence))
                window = sequence[max(0, end - n):end]
                nxt = items[sequence[end]]
                rows.append({"text": "History: " + " ".join(items[i]["sid"] for i in window) + f" Next: {nxt['sid']}"})
                titles = "; ".join(items[i]["title"] for i in window[-5:])
                rows.append({"text": f"A viewer who watched {titles} then watched {nxt['sid']} {nxt['title']}."})
        rng.shuffle(rows)
        return rows
