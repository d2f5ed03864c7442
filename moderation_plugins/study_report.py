"""What ``moderation_study`` reports: the fits per recipe, the Markdown table and the plot."""

from __future__ import annotations

import statistics
from typing import Any

from reasonrl.moderation_plugins.study_floors import floor_rows
from reasonrl.plugins.studies.curves import (
    curve_shape,
    fit_cells,
    fit_sigmoid,
    shape_line,
    sigmoid_curve,
    smallest_matching,
    t_interval,
)


def score_cell(point: dict[str, Any]) -> str:
    ci = point.get("ci95")
    return f"{point['score']:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

def budget_text(budget: dict[str, Any]) -> str:
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in budget.items() if v is not None)


class StudyReport:
    """Mixin of ``ModerationStudy`` (reads its params)."""

    def report(self, base: float, points: dict[str, list[tuple[int, list[float]]]],
               warm_start: int | None) -> dict[str, Any]:
        p = self.params
        means = {recipe: [(v, statistics.fmean(scores)) for v, scores in pts] for recipe, pts in points.items()}
        fits = {recipe: fit_sigmoid([v for v, _ in pts], [s for _, s in pts], base) for recipe, pts in means.items()}
        report: dict[str, Any] = {
            "axis": p.axis, "metric": p.metric, "eval_split": p.eval_split, "untrained": base, "seeds": p.seeds,
            "warm_start_examples": warm_start, "passes": p.passes,
            "points": {recipe: [{"value": v, "score": statistics.fmean(scores), "scores": scores,
                                 "ci95": t_interval(scores), "budget": self.budget(recipe, v)} for v, scores in pts]
                       for recipe, pts in points.items()},
            "fits": fits, "shapes": {recipe: curve_shape(fits[recipe], pts) for recipe, pts in points.items()}}
        if "rl" in means and "sft" in means:
            sft_best = max(s for _, s in means["sft"])
            report["sft_best"] = sft_best
            report["rl_matches_sft_best_at"] = smallest_matching(means["rl"], sft_best, p.match_tolerance)
        return report

    def budget(self, recipe: str, value: int) -> dict[str, float]:
        """What one rung trained on: optimiser steps and examples (sft) or rollouts (rl) seen."""
        params = self.child_params(recipe, value)
        n = value if self.params.axis == "examples" else None
        if recipe == "sft":
            batch, epochs = params.get("batch_size", 8), params.get("epochs", 1.0)
            steps = max(1, int((n or 0) * epochs / batch)) if n else None
            return {"steps": steps, "examples_seen": steps * batch if steps else None}
        steps, prompts, group = params.get("steps", 50), params.get("prompts_per_step", 8), params.get("group_size", 8)
        return {"steps": steps, "prompts_seen": steps * prompts, "rollouts": steps * prompts * group}

    def markdown(self, report: dict[str, Any]) -> str:
        p = self.params
        seeds = len(report["seeds"])
        lines = [f"### {p.title}: {p.metric} vs {p.axis} ({p.eval_split} split)", "",
                 f"starting model (R0 of the fit): {report['untrained']:.4f}; "
                 + (f"mean of {seeds} seeds [95% t-interval]" if seeds > 1 else "one seed"), "",
                 "| recipe | " + " | ".join(str(v) for v in p.values) + " | A | B | C_mid | R^2 |",
                 "|---" * (len(p.values) + 5) + "|"]
        for recipe, pts in report["points"].items():
            lines.append(f"| {recipe} | " + " | ".join(score_cell(pt) for pt in pts) + " | " +
                         " | ".join(fit_cells(report["fits"].get(recipe))) + " |")
        for name, cells in floor_rows(report.get("floors") or {}, p.values):
            lines.append(f"| {name} | " + " | ".join(cells) + " | - | - | - | - |")
        lines += ["", "Budget per rung: " + "; ".join(
            f"{recipe} " + ", ".join(f"{pt['value']}: {budget_text(pt['budget'])}" for pt in pts)
            for recipe, pts in report["points"].items()) + "."]
        lines.append(f"Fit to the means of the {len(p.values)} rungs; brackets: Wald 95% intervals with "
                     f"{len(p.values) - 3} residual degree(s) of freedom, undefined on a flat ladder or at a bound.")
        lines += [shape_line(recipe, shape) + "." for recipe, shape in report.get("shapes", {}).items()]
        if report.get("passes") is not None:
            lines.append(f"Both recipes see each of the n examples {report['passes']:g} time(s) per rung.")
        if report.get("from_ledger"):
            lines.append(f"{report['from_ledger']} of the points were trained elsewhere and taken from the ledger "
                         f"{p.ledger} (the starting model scored the same here, to the last digit).")
        if report.get("warm_start_examples"):
            lines.append(f"The starting model's warm start used {report['warm_start_examples']} further labelled "
                         f"examples, kept apart from every rung's n: a rung of n used n + "
                         f"{report['warm_start_examples']} labels in all.")
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
            ys = [pt["score"] for pt in pts]
            # 95% intervals over seeds as error bars (zero-length with one seed)
            errors = [[y - (pt["ci95"] or [y, y])[0] for y, pt in zip(ys, pts)],
                      [(pt["ci95"] or [y, y])[1] - y for y, pt in zip(ys, pts)]]
            line = ax.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, label=f"{recipe} (measured)").lines[0]
            fit = report["fits"].get(recipe)
            if fit:
                grid = np.geomspace(min(xs) / 2, max(xs) * 2, 100)
                ax.plot(grid, sigmoid_curve(grid, fit["R0"], fit["A"], fit["B"], fit["C_mid"]), "-",
                        color=line.get_color(), label=f"{recipe} fit (R^2 {fit['R2']:.2f})")
        ax.axhline(report["untrained"], color="grey", linestyle=":", label="starting model (R0)")
        plot_floors(ax, report.get("floors") or {})
        ax.set_xscale("log")
        ax.set_xlabel(self.params.axis)
        ax.set_ylabel(self.params.metric)
        ax.set_title(self.params.title)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def plot_floors(ax, floors: dict[str, Any]) -> None:
    """The majority label as a dashed line, TF-IDF per rung as crosses (on all training examples: dash-dot)."""
    majority = floors.get("majority")
    if majority and majority.get("score") is not None:
        ax.axhline(majority["score"], color="black", linestyle="--", linewidth=0.8,
                   label=f"majority label ({majority['label']})")
    per_rung = {int(v): s for v, s in (floors.get("tfidf_per_rung") or {}).items() if s is not None}
    if per_rung:
        ax.plot(list(per_rung), list(per_rung.values()), "x", color="black", label="TF-IDF on the same n")
    if floors.get("tfidf_all") is not None:
        ax.axhline(floors["tfidf_all"], color="black", linestyle="-.", linewidth=0.8,
                   label=f"TF-IDF on all {floors['train_examples']} training examples")
