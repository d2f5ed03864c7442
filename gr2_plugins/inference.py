"""Use a trained reranker: load a finished run and rerank one user's candidates.

Only the inference path is imported (model loading and sampling), no trainer.
"""

from __future__ import annotations

import difflib
import json
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from reasonrl.core.errors import ReasonRLError
from reasonrl.gr2_plugins.parsing import parse_answer
from reasonrl.gr2_plugins.prompts import index_student_prompt, student_prompt
from reasonrl.plugins.engine.manifest import DecodeSettings, choose_model, constraint_for, decode
from reasonrl.plugins.engine.models import add_inference_arguments


@dataclass
class RerankResult:
    ranking: list[str] | None  # item ids, best first; None when the answer did not parse
    explanation: str
    text: str
    error: str | None


def find_items_file(run_dir: Path) -> Path:
    found = sorted(Path(run_dir).glob("*/items.jsonl"))
    if not found:
        raise ReasonRLError(f"{run_dir} holds no */items.jsonl: pass the folder of a run with a gr2_prepare stage")
    return found[0]


def read_items(path: Path) -> dict[str, dict]:
    """item id -> item row of a gr2_prepare stage's items.jsonl."""
    items = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        items[row["id"]] = row
    return items


class Reranker:
    """``Reranker.from_run(run_dir).rerank(history_ids, candidate_ids)``"""

    def __init__(self, model, tokenizer, items: dict[str, dict], max_new_tokens: int | None = None,
                 history_items: int = 10, settings=None, prompting: "Prompting | None" = None,
                 max_candidates: int | None = None):
        """``settings``: a DecodeSettings (chat template, constraint, answer length), as the run's
        evaluation decoded this model; ``max_new_tokens`` overrides its answer length;
        ``prompting``: how the run's prompts were built (SID answers by default);
        ``max_candidates``: the longest list the model was trained to rerank (no limit: None)."""

        self.model, self.tokenizer, self.items = model.eval(), tokenizer, items
        settings = settings or DecodeSettings(stage="?")
        self.settings = settings if max_new_tokens is None else settings.model_copy(
            update={"max_new_tokens": max_new_tokens})
        self.constraint = constraint_for(self.settings)
        self.history_items = history_items
        self.prompting = prompting or Prompting()
        self.why = ""
        self.max_candidates = max_candidates
        self._by_title = {title_key(item["title"]): item_id for item_id, item in items.items()}

    @classmethod
    def from_run(cls, run_dir: str | Path, stage: str | None = None, device: str | None = None, dtype: str = "auto",
                 **kwargs) -> "Reranker":
        """The asked stage, else the best variant of the run's evaluation, decoded as evaluated."""
        from reasonrl.plugins.engine.models import load_trained

        run_dir = Path(run_dir)
        items = read_items(find_items_file(run_dir))
        settings, why = choose_model(run_dir, stage)
        kwargs.setdefault("history_items", prepared_history_items(run_dir))
        kwargs.setdefault("prompting", Prompting.of_run(run_dir))
        kwargs.setdefault("max_candidates", prepared_candidates(run_dir))
        reranker = cls(*load_trained(run_dir, settings.stage, device, dtype), items, settings=settings, **kwargs)
        reranker.why = why
        return reranker

    def resolve(self, refs: Sequence[str], role: str) -> list[str]:
        """Item ids for ids or exact titles; unknown items fail with suggestions."""
        ids, unknown = [], []
        for ref in refs:
            item_id = ref if ref in self.items else self._by_title.get(title_key(ref))
            (ids if item_id else unknown).append(item_id or ref)
        if unknown:
            hints = {u: difflib.get_close_matches(title_key(u), list(self._by_title), n=2) for u in unknown}
            raise ReasonRLError(f"unknown {role} items {unknown}: use item ids or exact titles of this run's "
                                f"catalogue; close titles: {hints}")
        return ids

    def check(self, history: Sequence[str], candidates: Sequence[str]) -> None:
        """A request the model can answer: known items, no repeated candidate, no more candidates
        than it was trained on, and a prompt that leaves room for the answer."""
        history, candidates = self.resolve(history, "history"), self.resolve(candidates, "candidate")
        repeated = sorted({c for c in candidates if candidates.count(c) > 1})
        if repeated:
            raise ReasonRLError(f"candidates {repeated} appear more than once; give each candidate once")
        if self.max_candidates is not None and len(candidates) > self.max_candidates:
            raise ReasonRLError(f"{len(candidates)} candidates: this model was trained to rerank at most "
                                f"{self.max_candidates} (gr2_prepare candidates); send the pre-ranker's top "
                                f"{self.max_candidates}")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        prompt = self.example(history[-self.history_items:], candidates, None)["prompt"]
        length = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        if limit is not None and length + self.settings.max_new_tokens > limit:
            raise ReasonRLError(f"the prompt is {length} tokens and the answer needs {self.settings.max_new_tokens}: "
                                f"more than the model's {limit} positions; send fewer or shorter items")

    def rerank(self, history: Sequence[str], candidates: Sequence[str], until: float | None = None) -> RerankResult:
        """``until``: the time of the last history item (index runs with evidence count recent
        views before it; default: the latest time in the run's data)."""
        return self.rerank_many([(history, candidates)], until)[0]

    def rerank_many(self, requests: Sequence[tuple[Sequence[str], Sequence[str]]],
                    until: float | None = None) -> list[RerankResult]:
        """(history, candidates) pairs, decoded as one batch."""

        resolved = [(self.resolve(h, "history")[-self.history_items:], self.resolve(c, "candidate"))
                    for h, c in requests]
        examples = [self.example(h, c, until) for h, c in resolved]
        constraints = None if self.constraint is None else [
            self.constraint.for_example(self.tokenizer, e) for e in examples]
        texts = decode(self.model, self.tokenizer, [e["prompt"] for e in examples], self.settings, constraints)
        results = []
        for (_, candidate_ids), example, text in zip(resolved, examples, texts):
            parsed = parse_answer(text, example)
            ranking = [candidate_ids[j] for j in parsed.order] if parsed.valid else None
            results.append(RerankResult(ranking, parsed.explanation, text, parsed.error))
        return results

    def example(self, history: list[str], candidates: list[str], until: float | None) -> dict:
        """The prompt (built as the run's gr2_prepare built it), candidates and answer format."""
        shown, cands = [self.items[i] for i in history], [self.items[i] for i in candidates]
        out = {"candidates": [c["sid"] for c in cands], "answer_format": self.prompting.answer_format}
        if self.prompting.answer_format == "sid":
            return {**out, "prompt": student_prompt(shown, cands)}
        stats = self.prompting.stats
        evidence = None if stats is None else [
            asdict(stats.evidence(history, stats.last_time if until is None else until, c)) for c in candidates]
        return {**out, "prompt": index_student_prompt(shown, cands, evidence, self.prompting.ranked,
                                                    self.prompting.summary, self.prompting.lines, self.prompting.hint)}


@dataclass
class Prompting:
    """How a run's gr2_prepare stage wrote prompts: the answer format, and for index prompts
    with evidence, the counts behind it (fit on the sequences the test lists were built from)."""

    answer_format: str = "sid"
    stats: object | None = None
    ranked: bool = False  # evidence_ranks
    summary: bool = False  # evidence_summary
    lines: bool = True  # evidence_lines
    hint: bool = False  # evidence_hint

    @classmethod
    def of_run(cls, run_dir: Path) -> "Prompting":
        from reasonrl.gr2_plugins.features import SequenceStats

        answer_format = prepared_setting(run_dir, "answer_format", "sid")
        if answer_format == "sid" or not prepared_setting(run_dir, "prompt_evidence", False):
            return cls(answer_format)
        folder = find_items_file(run_dir).parent
        if not (folder / SequenceStats.STATS_FILE).exists():
            raise ReasonRLError(f"{folder} has no {SequenceStats.STATS_FILE}: its prompts show the logs' evidence, "
                                f"which rerank needs to rebuild them; rerun the prepare stage (--force prepare)")
        summary = bool(prepared_setting(run_dir, "evidence_summary", False))
        lines = bool(prepared_setting(run_dir, "evidence_lines", True)) or not summary  # as gr2_prepare decides
        return cls(answer_format, SequenceStats.load(folder), bool(prepared_setting(run_dir, "evidence_ranks", False)),
                   summary, lines, bool(prepared_setting(run_dir, "evidence_hint", False)))


def prepared_history_items(run_dir: Path) -> int:
    """How many history items the run's gr2_prepare stage put in each prompt."""
    from reasonrl.gr2_plugins.prepare import GR2PrepareParams

    return int(prepared_setting(run_dir, "history_items", GR2PrepareParams.model_fields["history_items"].default))


def prepared_candidates(run_dir: Path) -> int:
    """How many candidates the run's gr2_prepare stage put in each list (the most a request may send)."""
    from reasonrl.gr2_plugins.prepare import GR2PrepareParams

    return int(prepared_setting(run_dir, "candidates", GR2PrepareParams.model_fields["candidates"].default))


def title_key(title) -> str:
    """A title as matched: Unicode normal form (NFKC), case and spacing ignored."""
    return " ".join(unicodedata.normalize("NFKC", str(title)).casefold().split())


def prepared_setting(run_dir: Path, key: str, default):
    """A setting of the run's gr2_prepare stage, from its resolved config (``default`` without one)."""
    import yaml

    config = Path(run_dir) / "config.resolved.yaml"
    if not config.exists():
        return default
    stages = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("stages", [])
    for stage in stages:
        if stage.get("stage") == "gr2_prepare":
            return stage.get(key, stage.get("params", {}).get(key, default))
    return default


def read_requests(path: Path) -> list[dict]:
    """The ``--batch`` file's requests, checked before any model work starts."""
    if not path.is_file():
        raise ReasonRLError(f"--batch {path}: no such file; give a JSONL file with one "
                            f'{{"history": [...], "candidates": [...]}} per line')
    requests = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReasonRLError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(request, dict) or "candidates" not in request:
            raise ReasonRLError(f"{path}:{number}: needs a JSON object with 'candidates' (and 'history')")
        requests.append({"history": request.get("history", []), "candidates": request["candidates"]})
    return requests


class RerankCommand:
    """``reasonrl rerank RUN_DIR --history ID ... --candidates ID ...`` or ``--batch FILE.jsonl``."""

    def __init__(self, params=None) -> None:
        self.params = params

    def add_arguments(self, parser) -> None:
        parser.add_argument("run_dir", help="a run folder with a gr2_prepare stage and a trained model")
        parser.add_argument("--stage", help="which training stage's model (default: the best variant of the "
                                            "run's evaluation report, else the newest)")
        parser.add_argument("--history", nargs="+", default=[], help="item ids or exact titles, oldest first")
        parser.add_argument("--candidates", nargs="+", default=[], help="item ids or exact titles to rerank")
        parser.add_argument("--batch", help="JSONL with {history: [...], candidates: [...]} per line; "
                                            "writes one JSON result per line to stdout")
        parser.add_argument("--max-new-tokens", type=int, default=None, help="default: what the evaluation used")
        add_inference_arguments(parser)

    def run(self, args) -> int:
        import sys

        requests = read_requests(Path(args.batch)) if args.batch else None
        reranker = Reranker.from_run(args.run_dir, args.stage, device=args.device, dtype=args.dtype,
                                     max_new_tokens=args.max_new_tokens)
        print(f"model: stage {reranker.settings.stage!r} ({reranker.why}); decoding as {reranker.settings.origin}",
              file=sys.stderr)
        if requests is not None:
            return self.run_batch(reranker, requests)
        if not args.candidates:
            raise ReasonRLError("give --candidates (and --history), or --batch FILE.jsonl")
        return self.run_one(reranker, args)

    def run_batch(self, reranker: Reranker, requests: list[dict]) -> int:
        """One JSON result per line; failed answers are counted on stderr and make the exit status 1."""
        import sys
        from collections import Counter

        failed: Counter = Counter()
        for request in requests:
            try:
                reranker.check(request["history"], request["candidates"])
            except ReasonRLError as exc:  # one bad request is reported; the others are still answered
                result = RerankResult(None, "", "", f"refused: {exc}")
            else:
                result = reranker.rerank(request["history"], request["candidates"])
            failed.update([result.error] if result.ranking is None else [])
            print(json.dumps(vars(result)), flush=True)
        if failed:
            print(f"{sum(failed.values())} of {len(requests)} answers did not parse into a ranking "
                  f"({', '.join(f'{n} {e}' for e, n in failed.most_common())})", file=sys.stderr)
            return 1
        return 0

    def run_one(self, reranker: Reranker, args) -> int:
        reranker.check(args.history, args.candidates)
        result = reranker.rerank(args.history, args.candidates)
        print(f"reasoning:\n{result.text}\n")
        if result.ranking is None:
            print(f"the answer did not parse ({result.error}); the candidates keep their order")
            return 1
        for rank, item_id in enumerate(result.ranking, 1):
            print(f"{rank:2d}. {item_id}  {reranker.items[item_id]['title']}")
        return 0


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    history: list[str] = Field(default_factory=list, description="item ids or exact titles, oldest first")
    candidates: list[str] = Field(min_length=2, description="item ids or exact titles to rerank")


class RerankEndpoint:
    """A ranking of the candidates with the reasoning, as ``reasonrl rerank`` gives it."""

    request_model = RerankRequest

    def __init__(self, params=None) -> None:
        self.params = params

    def prepare(self, served, request: RerankRequest):
        self.reranker(served).check(request.history, request.candidates)  # a bad request fails alone
        return "rerank", (request.history, request.candidates)

    def run_batch(self, served, key, payloads) -> list[dict]:
        return [{"model": served.name, **asdict(r)} for r in self.reranker(served).rerank_many(payloads)]

    def reranker(self, served) -> Reranker:
        return served.shared("reranker", lambda: Reranker(
            served.model, served.tokenizer, read_items(find_items_file(served.run_dir)),
            history_items=prepared_history_items(served.run_dir), settings=served.settings,
            prompting=Prompting.of_run(served.run_dir), max_candidates=prepared_candidates(served.run_dir)))
