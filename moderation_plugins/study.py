"""The ``moderation_study`` stage: quality vs training examples, rollouts or steps.

Each point of the ladder is a child run (an ``sft`` or ``rl`` stage) in its own folder
under the study's folder, with its own ``stage_done.json``: an interrupted study resumes
at the first unfinished point, seed by seed. Each point stores the fingerprint of what
decides it, so rungs and seeds can be added to an unfinished study without retraining the
finished points, and a point trained under other settings stops the run. The study fits

    perf(C) = R0 + (A - R0) / (1 + (C_mid / C) ** B)

per recipe, with R0 the starting model's score (``model``, before any rung trains it), to the
means over seeds, and reports A, B, C_mid with 95% intervals, R^2, and whether the curve is
sigmoid-like by a stated test (``curve_shape``); for a
data-efficiency ladder it also reports the smallest n at which RL matches SFT's best.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import time
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, model_validator

from reasonrl.core.config import ConstraintRef, DatasetRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.io import atomic_write_json, atomic_write_text, read_json
from reasonrl.core.pipeline import MARKER, run_stage
from reasonrl.core.registry import Params
from reasonrl.moderation_plugins.study_ledger import StudyLedger, WAIT
from reasonrl.moderation_plugins.study_report import StudyReport
from reasonrl.plugins.engine.models import MODEL_DIR, ModelSpec
from reasonrl.plugins.engine.rollout import SamplingParams
from reasonrl.plugins.engine.saving import CHECKPOINT_DIR
from reasonrl.plugins.evaluation import load_model
from reasonrl.moderation_plugins.study_floors import ladder_floors
from reasonrl.plugins.studies.claims import CLAIM, WORKER_POLL_SECONDS, claim_point
from reasonrl.plugins.studies.ledger import without_added_defaults


class StudyParams(Params):
    """A ladder of child sft/rl runs, each evaluated; sigmoid fit and data-efficiency summary."""

    dataset: DatasetRef
    """the moderation dataset every child run trains and evaluates on"""
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(source="packaged", name="smollm2-135m-instruct"),
                             description="the student every point starts from (and the R0 score)")
    axis: Literal["examples", "rollouts", "steps"] = "examples"
    """what grows along the ladder: training examples, rollouts per prompt or RL steps"""
    values: list[int] = Field(min_length=1, description="the ladder, e.g. [32, 64, 128, 256]")
    recipes: list[Literal["rl", "sft"]] = Field(default_factory=lambda: ["rl", "sft"])
    """which recipes climb the ladder: rl, sft or both"""
    rl: dict[str, Any] = Field(default_factory=dict, description="an rl stage's params (dataset and model filled in)")
    sft: dict[str, Any] = Field(default_factory=dict, description="an sft stage's params (dataset and model filled in)")
    eval_split: str = Field("validation", description="the test split is kept for final reports, not ladders")
    eval_examples: int | None = Field(None, gt=0)
    """evaluate each child on the first N test examples (default: all)"""
    metric: str = "accuracy"
    """the report metric the curves and the sigmoid fit use"""
    sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(top_k=1, max_new_tokens=48))
    """decoding settings of the evaluations"""
    chat_template: bool = True
    """wrap prompts in the tokenizer's chat template"""
    constraint: ConstraintRef | None = Field(None, description=(
        "a decoding constraint of the evaluations, e.g. verdict_close: every answer ends with a verdict"))
    model_scores: bool = Field(False, description=(
        "also report roc_auc_model, pr_auc_model and ece_model, from the model's label probabilities at the "
        "verdict (one more forward pass per example; binary tasks)"))
    match_tolerance: float = Field(0.01, ge=0, description="RL 'matches' SFT's best within this margin")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description=(
        "training seeds per rung (added to the run's seed); the report gives the mean and a 95% t-interval"))
    passes: float | None = Field(None, gt=0, description=(
        "equal budget per rung on an examples ladder: sft trains this many epochs over the n examples and rl "
        "takes ceil(passes * n / prompts_per_step) steps, so both see each example this many times; "
        "null: the rl and sft params decide"))
    keep_models: bool = Field(True, description=(
        "keep each point's trained model once its score is stored (about 0.5 GB per point for SmolLM2-135M); "
        "false deletes it (and a steps ladder's snapshots) after scoring; finished points' resume checkpoints "
        "are always deleted"))
    ledger: str | None = Field(None, description=(
        "a folder (e.g. in a repository) that also keeps every finished point's score and metrics, so the "
        "ladder can go on on another machine or after its run folder is gone: a point found there with the "
        "same settings is adopted, not trained, once the starting model scores exactly as it did there"))
    title: str = "Moderation study"
    """the report's title"""
    progress: bool = True
    """show progress bars"""

    @model_validator(mode="after")
    def _axis_fits_recipes(self):
        if self.axis != "examples" and "sft" in self.recipes:
            raise ValueError(f"axis {self.axis!r} is an RL knob; use recipes: [rl] (sft only ladders examples)")
        if self.passes is not None and self.axis != "examples":
            raise ValueError(f"passes sets the budget of an examples ladder; axis {self.axis!r} sets it itself")
        return self


AXIS_FIELD = {"rollouts": "group_size", "steps": "steps"}
# child params that change how a point runs, not what it produces
RESULT_NEUTRAL = frozenset({"progress", "checkpoint_every", "snapshots"})
def starting_output_id(context: StageContext, model: ModelSpec, key: str = "output_id") -> str | None:
    """The output id (or with ``key="fingerprint"``, the config fingerprint) of the earlier stage the
    study's model comes from; None for other sources."""
    if model.source != "stage" or not model.stage:
        return None
    marker = context.run_dir / model.stage / MARKER
    return read_json(marker).get(key) if marker.exists() else None


def point_name(axis: str, recipe: str, value: int, seed: int) -> str:
    return f"{recipe}_{axis}{value}" + (f"_seed{seed}" if seed else "")


def rung_budget(recipe: str, n: int, passes: float, params: dict[str, Any]) -> dict[str, Any]:
    """The child params that make a recipe see each of its n examples ``passes`` times."""
    if recipe == "sft":
        return {"epochs": passes}
    return {"steps": max(1, math.ceil(passes * n / params.get("prompts_per_step", 8)))}


def warm_start_pool(context: StageContext, dataset: DatasetRef) -> int | None:
    """Size of the dataset's separate warm-start split, when it keeps one."""
    pool = context.build(dataset).splits().get("warm_start")
    return len(pool) if pool else None


class ModerationStudy(StudyLedger, StudyReport):
    # several processes may run one study in one run folder: points are claimed one by one
    shares_run_folder = True

    def __init__(self, params) -> None:
        self.params = params

    def run(self, context: StageContext) -> dict[str, Any]:
        p = self.params
        # seed-major: an interrupted study has whole ladders (every rung, every recipe) of its first seeds
        # a steps ladder that shares prefixes trains its longest rung first; the others score its snapshots
        ladder = sorted(p.values, reverse=True) if self.shares_prefixes() else p.values
        jobs = [None] + [(recipe, value, seed) for seed in p.seeds for value in ladder for recipe in p.recipes]
        scores = {job: self.evaluate_point(context, self.name(job), job) for job in jobs}
        while any(score is None for score in scores.values()):  # points other workers hold
            time.sleep(WORKER_POLL_SECONDS)
            scores = {job: self.evaluate_point(context, self.name(job), job) if score is None else score
                      for job, score in scores.items()}
        base = scores.pop(None)
        points = {recipe: [(value, [scores[recipe, value, seed] for seed in p.seeds]) for value in p.values]
                  for recipe in p.recipes}
        report = self.report(base, points, warm_start_pool(context, p.dataset))
        report["floors"] = ladder_floors(context.build(p.dataset).splits(), p.axis, p.values, p.eval_split,
                                         p.eval_examples, p.metric)
        report["from_ledger"] = sum("ledger" in read_json(context.stage_dir / self.name(job) / "point.json")
                                    for job in scores)
        atomic_write_json(context.stage_dir / "report.json", report)
        atomic_write_text(context.stage_dir / "report.md", self.markdown(report) + "\n")
        self.plot(context.stage_dir / "study.png", report)
        return {k: v for k, v in report.items() if k != "points"}

    # ------------------------------------------------------------------ one point
    def name(self, job: tuple[str, int, int] | None) -> str:
        return "base" if job is None else point_name(self.params.axis, *job)

    def evaluate_point(self, context: StageContext, name: str, job: tuple[str, int, int] | None) -> float | None:
        """Train (unless ``job`` is None: the starting model), evaluate, remember the score; None
        while another live worker holds the point."""
        folder = context.stage_dir / name
        done = folder / "point.json"
        fingerprint = self.point_fingerprint(context, job)
        if done.exists():  # the stored metrics let a changed ``metric`` re-report without retraining
            return self.finished_score(context, name, job, fingerprint)
        if not claim_point(folder):
            return None
        try:
            if done.exists():  # finished by the worker whose claim just ended
                return self.finished_score(context, name, job, fingerprint)
            adopted = self.adopt_from_ledger(context, name, job, fingerprint)
            if adopted is not None:
                return None if adopted is WAIT else adopted
            source, started = None, time.monotonic()
            if job is not None:
                source = self.prefix_source(context, job)
                if source is WAIT:
                    return None
                if source is None:
                    self.train_child(context, name, fingerprint, *job)
                    source = name
            score, metrics = self.score_model(context, source)
            atomic_write_json(done, {"score": score, "metrics": metrics, "fingerprint": fingerprint,
                                     "seconds": round(time.monotonic() - started, 3)})
            if source and not self.params.keep_models:
                self.drop_model(context, source)
            self.record_in_ledger(context, name, job)
            return score
        finally:
            (folder / CLAIM).unlink(missing_ok=True)

    def drop_model(self, context: StageContext, source: str) -> None:
        """Delete a scored point's model: a trained child's model folder, or the snapshot of the
        longest steps rung that a shorter rung was scored from."""
        folder = context.stage_dir / source
        shutil.rmtree(folder / MODEL_DIR if (folder / MARKER).exists() else folder, ignore_errors=True)

    def shares_prefixes(self) -> bool:
        """True when rung k of a steps ladder is exactly the first k steps of its longest rung: RL
        steps draw their prompts and samples from (seed, step) alone, so only a learning rate that
        depends on the total (linear, cosine) tells them apart."""
        return self.params.axis == "steps" and self.params.rl.get("schedule", "constant") == "constant"

    def prefix_source(self, context: StageContext, job: tuple[str, int, int]) -> str | None | object:
        """Where a shorter steps rung's model is: the longest rung's snapshot (its stage id under the
        study), None to train the rung itself, or WAIT while another worker trains the longest."""
        recipe, value, seed = job
        longest = max(self.params.values)
        if not self.shares_prefixes() or value == longest:
            return None
        owner = self.name((recipe, longest, seed))
        snapshot = f"{owner}/snapshots/step{value}"
        if (context.stage_dir / snapshot / MODEL_DIR / "config.json").exists():
            return snapshot
        # the longest rung finished without this snapshot (the ladder grew): train the rung alone
        return None if (context.stage_dir / owner / MARKER).exists() else WAIT

    def finished_score(self, context: StageContext, name: str, job: tuple[str, int, int] | None,
                       fingerprint: str) -> float:
        score = self.stored_score(context, name, fingerprint)
        self.record_in_ledger(context, name, job)  # points finished before the ledger was set go in too
        return score

    # ------------------------------------------------------------------ ledger

    def point_fingerprint(self, context: StageContext, job: tuple[str, int, int] | None,
                          start_key: str = "output_id") -> str:
        """sha256 of what decides one point: its child's params and seed, the starting model's
        run output and how it is scored. Not the rest of the ladder, so adding a rung or a seed
        keeps every finished point; not settings that change no result (progress, checkpoints).
        ``start_key="fingerprint"`` names the starting stage by its config instead of its output:
        the same on any machine, as the ledger needs."""
        return self.fingerprint(job, starting_output_id(context, self.params.model, start_key), context.seed)

    def fingerprint(self, job: tuple[str, int, int] | None, start: str | None, run_seed: int,
                    earlier: bool = False) -> str:
        """``earlier=True``: as code before the settings of ADDED_NEUTRAL_DEFAULTS computed it."""
        p = self.params
        scoring = {"dataset": p.dataset.model_dump(mode="json"), "split": p.eval_split, "examples": p.eval_examples,
                   "sampling": p.sampling.model_dump(mode="json"), "chat_template": p.chat_template}
        # set only when used, so ladders scored before these options existed keep their fingerprints
        if p.constraint is not None:
            scoring["constraint"] = p.constraint.model_dump(mode="json")
        if p.model_scores:
            scoring["model_scores"] = True
        payload: dict[str, Any] = {"scoring": scoring, "model": p.model.model_dump(mode="json"), "model_output": start}
        if job is not None:
            recipe, value, seed = job
            child = {k: v for k, v in self.child_params(recipe, value).items() if k not in RESULT_NEUTRAL}
            payload.update(recipe=recipe, child=child, seed=run_seed + seed)
        if earlier:
            payload = without_added_defaults(payload)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def child_params(self, recipe: str, value: int) -> dict[str, Any]:
        p = self.params
        params = copy.deepcopy(p.rl if recipe == "rl" else p.sft)
        dataset = copy.deepcopy(p.dataset.model_dump())
        if p.axis == "examples":
            dataset["params"]["max_train"] = value
        elif recipe == "rl":
            params[AXIS_FIELD[p.axis]] = value
        if p.passes is not None:
            params.update(rung_budget(recipe, value, p.passes, params))
        if self.shares_prefixes() and value == max(p.values):
            params["snapshots"] = sorted(v for v in p.values if v < value)
        params.setdefault("model", p.model.model_dump())
        params["dataset"] = dataset
        params.setdefault("progress", p.progress)
        return params

    def train_child(self, context: StageContext, name: str, fingerprint: str, recipe: str, value: int,
                    seed: int) -> None:
        folder = context.stage_dir / name
        if (folder / MARKER).exists():
            return
        folder.mkdir(parents=True, exist_ok=True)
        params = self.child_params(recipe, value)
        # the point's fingerprint: a resume checkpoint of this child is kept when other rungs change
        child = replace(context, stage_dir=folder, stage_id=f"{context.stage_id}/{name}", fingerprint=fingerprint,
                        seed=context.seed + seed)
        run_stage(child, recipe, params, echo=lambda message: None)
        shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)  # a finished child never resumes

    def score_model(self, context: StageContext, child: str | None) -> tuple[float, dict[str, Any]]:
        from reasonrl.moderation_plugins.evaluate import (classify_examples, model_label_probabilities,
                                                          model_score_metrics, score_verdicts)
        from reasonrl.moderation_plugins.selection import label_shares

        p = self.params
        examples = context.build(p.dataset).splits()[p.eval_split][: p.eval_examples]
        source = f"{context.stage_id}/{child}" if child else p.model
        model, tokenizer = load_model(source, context.run_dir)
        rule = context.build(p.constraint) if p.constraint is not None else None
        verdicts, generated = classify_examples(
            model, tokenizer, examples, p.sampling, seed=context.seed, chat_template=p.chat_template,
            desc=f"score {child or 'base'}", progress=p.progress,
            constraints=None if rule is None else [rule.for_example(tokenizer, e) for e in examples])
        metrics = score_verdicts(examples, verdicts)
        metrics.pop("reliability", None)
        metrics["top_label_share"] = max(label_shares(verdicts).values())  # a collapsed point shows here
        if p.model_scores:
            probabilities = model_label_probabilities(model, tokenizer, examples, generated, p.chat_template)
            metrics.update(model_score_metrics(examples, verdicts, probabilities))
        return float(metrics[p.metric]), metrics

    # ------------------------------------------------------------------ report


