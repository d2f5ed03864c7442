"""The ``moderation_study`` stage: quality vs training examples, rollouts or steps.

Each point of the ladder is a child run (an ``sft`` or ``rl`` stage) in its own folder
under the study's folder, with its own ``stage_done.json``: an interrupted study resumes
at the first unfinished point. The study fits

    perf(C) = R0 + (A - R0) / (1 + (C_mid / C) ** B)

per recipe, with R0 the starting model's score (``model``, before any rung trains it), and reports A, B, C_mid and R^2; for a
data-efficiency ladder it also reports the smallest n at which RL matches SFT's best.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import replace
from typing import Any, Literal, Sequence

from pydantic import Field, model_validator

from reasonrl.core.config import DatasetRef
from reasonrl.core.contracts import StageContext
from reasonrl.core.io import atomic_write_json, atomic_write_text, read_json
from reasonrl.core.pipeline import MARKER, run_stage
from reasonrl.core.registry import Params
from reasonrl.plugins.models import ModelSpec
from reasonrl.plugins.rollout import SamplingParams


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
    match_tolerance: float = Field(0.01, ge=0, description="RL 'matches' SFT's best within this margin")
    title: str = "Moderation study"
    """the report's title"""
    progress: bool = True
    """show progress bars"""

    @model_validator(mode="after")
    def _axis_fits_recipes(self):
        if self.axis != "examples" and "sft" in self.recipes:
            raise ValueError(f"axis {self.axis!r} is an RL knob; use recipes: [rl] (sft only ladders examples)")
        return self


AXIS_FIELD = {"rollouts": "group_size", "steps": "steps"}


def sigmoid_curve(c, r0: float, a: float, b: float, c_mid: float):
    import numpy as np

    return r0 + (a - r0) / (1.0 + (c_mid / np.asarray(c, dtype=float)) ** b)


def fit_sigmoid(xs: Sequence[float], ys: Sequence[float], r0: float) -> dict[str, float] | None:
    """Least-squares A, B, C_mid with R0 fixed; None with fewer than 3 points or no convergence."""
    import numpy as np
    from scipy.optimize import curve_fit

    if len(xs) < 3:
        return None
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    guess = [float(ys.max()), 1.0, float(np.median(xs))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # flat ladders leave the covariance undefined; R^2 says enough
            (a, b, c_mid), _ = curve_fit(lambda c, a, b, m: sigmoid_curve(c, r0, a, b, m), xs, ys, p0=guess,
                                         bounds=([-1.0, 0.05, 1e-3], [2.0, 20.0, 1e7]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    predicted = sigmoid_curve(xs, r0, a, b, c_mid)
    total = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1.0 - float(((ys - predicted) ** 2).sum()) / total if total > 0 else float("nan")
    return {"R0": r0, "A": float(a), "B": float(b), "C_mid": float(c_mid), "R2": r2}


def smallest_matching(rl_points: Sequence[tuple[int, float]], target: float, tolerance: float) -> int | None:
    """The smallest ladder value whose RL score is within ``tolerance`` of ``target``."""
    for value, score in sorted(rl_points):
        if score >= target - tolerance:
            return value
    return None


class ModerationStudy:
    def __init__(self, params) -> None:
        self.params = params

    def run(self, context: StageContext) -> dict[str, Any]:
        p = self.params
        base = self.evaluate_point(context, "base", None)
        points: dict[str, list[tuple[int, float]]] = {}
        for recipe in p.recipes:
            for value in p.values:
                score = self.evaluate_point(context, f"{recipe}_{p.axis}{value}", (recipe, value))
                points.setdefault(recipe, []).append((value, score))
        report = self.report(base, points)
        atomic_write_json(context.stage_dir / "report.json", report)
        atomic_write_text(context.stage_dir / "report.md", self.markdown(report) + "\n")
        self.plot(context.stage_dir / "study.png", report)
        return {k: v for k, v in report.items() if k != "points"}

    # ------------------------------------------------------------------ one point
    def evaluate_point(self, context: StageContext, name: str, job: tuple[str, int] | None) -> float:
        """Train (unless ``job`` is None: the starting model), evaluate, remember the score."""
        folder = context.stage_dir / name
        done = folder / "point.json"
        if done.exists():  # the stored metrics let a changed ``metric`` re-report without retraining
            return float(read_json(done)["metrics"][self.params.metric])
        if job is not None:
            self.train_child(context, name, *job)
        score, metrics = self.score_model(context, name if job is not None else None)
        atomic_write_json(done, {"score": score, "metrics": metrics})
        return score

    def child_params(self, recipe: str, value: int) -> dict[str, Any]:
        p = self.params
        params = copy.deepcopy(p.rl if recipe == "rl" else p.sft)
        dataset = copy.deepcopy(p.dataset.model_dump())
        if p.axis == "examples":
            dataset["params"]["max_train"] = value
        elif recipe == "rl":
            params[AXIS_FIELD[p.axis]] = value
        params.setdefault("model", p.model.model_dump())
        params["dataset"] = dataset
        params.setdefault("progress", p.progress)
        return params

    def train_child(self, context: StageContext, name: str, recipe: str, value: int) -> None:
        folder = context.stage_dir / name
        if (folder / MARKER).exists():
            return
        folder.mkdir(parents=True, exist_ok=True)
        params = self.child_params(recipe, value)
        # the study's own fingerprint already covers the ladder; a rung adds which one it is
        fingerprint = hashlib.sha256(f"{context.fingerprint}/{name}".encode()).hexdigest()
        child = replace(context, stage_dir=folder, stage_id=f"{context.stage_id}/{name}", fingerprint=fingerprint)
        run_stage(child, recipe, params, echo=lambda message: None)

    def score_model(self, context: StageContext, child: str | None) -> tuple[float, dict[str, Any]]:
        from reasonrl.moderation_plugins.evaluate import aggregate_samples, score_verdicts
        from reasonrl.plugins.evaluation import generate_texts, load_model

        p = self.params
        examples = context.build(p.dataset).splits()[p.eval_split][: p.eval_examples]
        source = f"{context.stage_id}/{child}" if child else p.model
        model, tokenizer = load_model(source, context.run_dir)
        samples = generate_texts(model, tokenizer, [e["prompt"] for e in examples], p.sampling, seed=context.seed,
                                 chat_template=p.chat_template, desc=f"score {child or 'base'}", progress=p.progress)
        metrics = score_verdicts(examples, [aggregate_samples(s, e["labels"]) for s, e in zip(samples, examples)])
        metrics.pop("reliability", None)
        return float(metrics[p.metric]), metrics

    # ------------------------------------------------------------------ report
    def report(self, base: float, points: dict[str, list[tuple[int, float]]]) -> dict[str, Any]:
        p = self.params
        fits = {recipe: fit_sigmoid([v for v, _ in pts], [s for _, s in pts], base) for recipe, pts in points.items()}
        report: dict[str, Any] = {"axis": p.axis, "metric": p.metric, "eval_split": p.eval_split, "untrained": base,
                                  "points": {r: [{"value": v, "score": s} for v, s in pts] for r, pts in points.items()},
                                  "fits": fits}
        if "rl" in points and "sft" in points:
            sft_best = max(s for _, s in points["sft"])
            report["sft_best"] = sft_best
            report["rl_matches_sft_best_at"] = smallest_matching(points["rl"], sft_best, p.match_tolerance)
        return report

    def markdown(self, report: dict[str, Any]) -> str:
        p = self.params
        lines = [f"### {p.title}: {p.metric} vs {p.axis} ({p.eval_split} split)", "",
                 f"starting model (R0 of the fit): {report['untrained']:.4f}", "",
                 "| recipe | " + " | ".join(str(v) for v in p.values) + " | A | B | C_mid | R^2 |",
                 "|---" * (len(p.values) + 5) + "|"]
        for recipe, pts in report["points"].items():
            fit = report["fits"].get(recipe)
            fit_cells = [f"{fit[k]:.3f}" for k in ("A", "B", "C_mid", "R2")] if fit else ["-"] * 4
            lines.append(f"| {recipe} | " + " | ".join(f"{pt['score']:.4f}" for pt in pts) + " | " +
                         " | ".join(fit_cells) + " |")
        if "sft_best" in report:
            at = report["rl_matches_sft_best_at"]
            lines += ["", f"SFT's best: {report['sft_best']:.4f}; RL matches it (within {p.match_tolerance}) "
                      + (f"from {p.axis} = {at}." if at is not None else "nowhere on this ladder.")]
        return "\n".join(lines)

    def plot(self, path, report: dict[str, Any]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        fig, ax = plt.subplots(figsize=(6, 4))
        for recipe, pts in report["points"].items():
            xs = [pt["value"] for pt in pts]
            line = ax.plot(xs, [pt["score"] for pt in pts], "o", label=f"{recipe} (measured)")[0]
            fit = report["fits"].get(recipe)
            if fit:
                grid = np.geomspace(min(xs) / 2, max(xs) * 2, 100)
                ax.plot(grid, sigmoid_curve(grid, fit["R0"], fit["A"], fit["B"], fit["C_mid"]), "-",
                        color=line.get_color(), label=f"{recipe} fit (R^2 {fit['R2']:.2f})")
        ax.axhline(report["untrained"], color="grey", linestyle=":", label="starting model (R0)")
        ax.set_xscale("log")
        ax.set_xlabel(self.params.axis)
        ax.set_ylabel(self.params.metric)
        ax.set_title(self.params.title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
