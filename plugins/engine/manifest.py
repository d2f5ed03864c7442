"""Inference manifests: how a trained run is meant to be queried.

A training stage writes ``model/inference.json`` (chat template, decoding constraint,
answer length) next to the model it saves, so the settings travel with an export. An
evaluation stage writes ``inference.json`` in its own folder: the settings each variant was
evaluated with, and the best variant by the report's main metric. ``choose_model`` reads
them, so ``reasonrl rerank`` / ``classify`` / ``serve`` answer the way the report measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from reasonrl.core.config import ConstraintRef
from reasonrl.core.io import atomic_write_json
from reasonrl.core.manager import get_registry
from reasonrl.core.registry import Params
from reasonrl.plugins.engine.generation import generate_texts

MANIFEST = "inference.json"


class DecodeSettings(Params):
    """How one trained stage answers: what evaluation used, else what training used."""

    stage: str
    """the training stage whose model answers"""
    chat_template: bool = False
    """wrap prompts in the tokenizer's chat template"""
    constraint: ConstraintRef | None = None
    """the decoding constraint (e.g. sid_trie)"""
    max_new_tokens: int = Field(256, gt=0)
    """answer length limit"""
    prompt_batch_size: int = Field(8, gt=0)
    """prompts decoded together (the evaluation's, so batched greedy decoding matches it)"""
    origin: str = "defaults"
    """where these settings come from"""


def write_training_manifest(model_dir: Path, settings: DecodeSettings) -> None:
    atomic_write_json(Path(model_dir) / MANIFEST, {"kind": "training", **settings.model_dump(mode="json")})


def write_evaluation_manifest(stage_dir: Path, stage_id: str, variants: list[DecodeSettings], metric: str,
                              rows: dict[str, dict[str, Any]], names: dict[str, str]) -> None:
    """``names``: stage -> the variant's row name; the best is the trained stage with the highest ``metric``."""
    scored = [(rows[names[s.stage]].get(metric), s.stage) for s in variants if names.get(s.stage) in rows]
    scored = [(value, stage) for value, stage in scored if isinstance(value, (int, float))]
    best = max(scored)[1] if scored else None
    atomic_write_json(Path(stage_dir) / MANIFEST, {
        "kind": "evaluation", "evaluation": stage_id, "metric": metric, "best": best,
        "variants": [s.model_copy(update={"origin": f"evaluation {stage_id}"}).model_dump(mode="json")
                     for s in variants]})


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def latest_evaluation(run_dir: Path) -> dict[str, Any] | None:
    manifests = [(p.stat().st_mtime, data) for p in Path(run_dir).glob(f"*/{MANIFEST}")
                 if (data := _read(p)) and data.get("kind") == "evaluation"]
    return max(manifests, key=lambda item: item[0])[1] if manifests else None


def choose_model(run_dir: Path, stage: str | None = None) -> tuple[DecodeSettings, str]:
    """(settings, why): the asked stage, else the evaluation's best variant, else the newest
    trained stage; settings from the evaluation that measured that stage, else from training."""
    from reasonrl.plugins.engine.models import find_model_dir

    run_dir = Path(run_dir)
    evaluation = latest_evaluation(run_dir)
    if stage is not None:
        why = "asked for"
    elif evaluation and evaluation.get("best"):
        stage = evaluation["best"]
        why = f"best {evaluation['metric']} in the report of {evaluation['evaluation']!r}"
    else:
        stage = find_model_dir(run_dir).parent.name
        why = "newest trained stage (the run has no evaluation report)"
    find_model_dir(run_dir, stage)  # a clear error for a stage without a model
    for row in (evaluation or {}).get("variants", []):
        if row["stage"] == stage:
            return DecodeSettings(**row), why
    trained = _read(run_dir / stage / "model" / MANIFEST)
    if trained:
        trained.pop("kind", None)
        return DecodeSettings(**trained), why
    return DecodeSettings(stage=stage), why


def decode(model, tokenizer, prompts: list[str], settings: DecodeSettings, constraints=None) -> list[str]:
    """Greedy answers decoded exactly as the evaluation decoded them (same batching)."""
    from reasonrl.plugins.engine.rollout import SamplingParams

    sampling = SamplingParams(top_k=1, max_new_tokens=settings.max_new_tokens,
                              prompt_batch_size=settings.prompt_batch_size)
    texts = generate_texts(model, tokenizer, prompts, sampling, chat_template=settings.chat_template,
                           progress=False, constraints=constraints)
    return [t[0] for t in texts]


def constraint_for(settings: DecodeSettings):
    """The manifest's decoding constraint, built from the registry (None when there is none)."""
    if settings.constraint is None:
        return None

    return get_registry().build("decoding_constraints", settings.constraint.name, settings.constraint.params)
