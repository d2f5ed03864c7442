"""The ``gr2_prepare`` stage: data -> pre-ranker lists -> semantic IDs -> prompts and corpus."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field, model_validator

from reasonrl.core.config import ItemTokenizerRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from reasonrl.core.registry import Params
from reasonrl.gr2_plugins.data import (
    Interactions,
    InteractionsTableParams,
    Item,
    UserSplit,
    k_core,
    leave_one_out,
    load_interactions_table,
    load_movielens,
)
from reasonrl.gr2_plugins.metrics import ranking_metrics
from reasonrl.gr2_plugins.preranker import ItemKNN, ItemKNNParams
from reasonrl.gr2_plugins.prompts import student_prompt, teacher_prompt


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
    seed: int = Field(0, description="seed of the user caps and the corpus windows")
    progress: bool = Field(True, description="show progress bars")

    @model_validator(mode="after")
    def _table_with_its_source(self):
        if (self.dataset == "table") != (self.table is not None):
            raise ValueError("give table: {data_files: ..., ...} exactly when dataset is 'table'")
        return self


def split_examples(splits: dict[str, UserSplit], train_targets: int = 1) -> dict[str, list[tuple[str, list[str], str]]]:
    """(user, history, target) per split: train predicts each of its last ``train_targets``
    training items from what came before, validation the second-to-last item, test the last."""
    out: dict[str, list] = {"train": [], "validation": [], "test": []}
    for user, s in splits.items():
        for back in range(1, min(train_targets, len(s.train) - 1) + 1):
            out["train"].append((user, s.train[:-back], s.train[-back]))
        out["validation"].append((user, s.train, s.valid))
        out["test"].append((user, s.train + [s.valid], s.test))
    return out


class GR2Prepare:
    """Loads MovieLens, builds top-k lists with the pre-ranker, semantic IDs, prompts and corpus."""

    def __init__(self, params: GR2PrepareParams) -> None:
        self.params = params

    def run(self, context: StageContext) -> dict[str, Any]:
        p = self.params
        data = (load_interactions_table(p.table, p.min_rating) if p.dataset == "table"
                else load_movielens(p.dataset, p.path, p.min_rating))
        splits = leave_one_out(k_core(data.sequences, p.k_core))
        catalog = sorted({i for s in splits.values() for i in s.train + [s.valid, s.test]})
        knn = ItemKNN(**p.preranker.model_dump()).fit([s.train for s in splits.values()], catalog)
        items, sid_report = self.semantic_ids(context, data, catalog)
        out = context.stage_dir
        summary: dict[str, Any] = {"dataset": p.dataset, "users": len(splits), "items": len(catalog),
                                   "sid_uniqueness": sid_report["uniqueness"],
                                   "sid_uniqueness_raw": sid_report.get("uniqueness_raw")}
        rng = random.Random(p.seed)
        for split, triples in split_examples(splits, p.train_targets_per_user).items():
            examples, coverage = self.build_examples(triples, knn, items)
            cap = p.max_users.get(split)
            if cap is not None and len(examples) > cap:
                examples = rng.sample(examples, cap)
            atomic_write_jsonl(out / f"{split}.jsonl", examples)
            summary[f"coverage/{split}"] = coverage
            summary[f"examples/{split}"] = len(examples)
            if split != "train":
                baseline = ranking_metrics([e["candidate_ids"] for e in examples], [e["target"] for e in examples])
                summary.update({f"preranker/{split}/{k}": v for k, v in baseline.items()})
        atomic_write_jsonl(out / "items.jsonl", [items[i] for i in catalog])
        atomic_write_jsonl(out / "corpus.jsonl", self.corpus(splits, items, rng))
        atomic_write_json(out / "summary.json", summary)
        return summary

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

    def build_examples(self, triples, knn: ItemKNN, items: dict[str, dict]) -> tuple[list[dict], float]:
        p = self.params
        examples = []
        for user, history, target in triples:
            candidates = knn.top_k(history, p.candidates)
            if target not in candidates:
                continue
            shown = [items[i] for i in history[-p.history_items:]]
            cands = [items[i] for i in candidates]
            examples.append({
                "user": user, "history": history[-p.history_items:], "target": target,
                "candidate_ids": candidates, "candidates": [c["sid"] for c in cands],
                "target_index": candidates.index(target), "prompt": student_prompt(shown, cands),
                "teacher_prompt": teacher_prompt(shown, cands),
                "teacher_prompt_targeted": teacher_prompt(shown, cands, target=items[target]),
            })
        return examples, len(examples) / max(len(triples), 1)

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
