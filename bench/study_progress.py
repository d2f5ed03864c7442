"""The finished points of a ``moderation_study`` that is still running (or was cut short).

A study writes its report when every point is done; a long ladder (hours on CPU, over
several sittings) has finished points long before that. This prints them as a table: per
recipe and rung, the seeds done, their scores, the mean and a 95% t-interval, and the
RL - SFT difference per seed where both are done (with its mean per rung and over every pair,
and a Wilcoxon signed-rank p), and the study's sigmoid fit to the means
so far (with 95% parameter intervals) for each recipe with at least 4 rungs started, and
whether that curve is sigmoid-like by the study's test; and the floors on the same evaluation
examples: the majority label and TF-IDF + logistic regression (on each rung's n examples and
on the whole training split).

    python bench/study_progress.py runs/moderation_data_efficiency harmful_response
    python bench/study_progress.py runs/moderation_scaling steps --metric accuracy

Given a config file instead of a run folder, it reads the study's ledger (``ledger:``), so a
fresh checkout shows the points finished on any machine, without running anything:

    python bench/study_progress.py examples/moderation_data_efficiency.yaml harmful_response
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import yaml

from reasonrl.core.config import load_config
from reasonrl.core.io import read_json
from reasonrl.core.manager import get_registry
from reasonrl.core.pipeline import stage_fingerprint, stage_inputs
from reasonrl.plugins.studies.ledger import earlier_start_fingerprint, entry_path
from reasonrl.moderation_plugins.study import ModerationStudy, StudyParams, point_name
from reasonrl.moderation_plugins.study_floors import floor_rows, ladder_floors
from reasonrl.plugins.studies.curves import curve_shape, fit_cells, fit_sigmoid, shape_line, t_interval


def study_params(run_dir: Path, stage_id: str) -> StudyParams:
    config = run_dir / "config.resolved.yaml"
    if not config.exists():
        raise SystemExit(f"{config} does not exist: give the folder of a run (runs/<run_name>)")
    stages = {s.get("id"): s for s in (yaml.safe_load(config.read_text()) or {}).get("stages", [])}
    require_study({i: s.get("stage") for i, s in stages.items()}, stage_id, run_dir)
    return StudyParams.model_validate({k: v for k, v in stages[stage_id].items() if k not in ("stage", "id")})


def require_study(kinds: dict[str, str | None], stage_id: str, where: Path) -> None:
    """Stop, naming the studies there are, unless ``stage_id`` is a moderation_study (kinds: id -> stage name)."""
    if kinds.get(stage_id) != "moderation_study":
        studies = [i for i, kind in kinds.items() if kind == "moderation_study"]
        raise SystemExit(f"{where} has no moderation_study stage {stage_id!r}; its studies: {studies}")


def run_points(run_dir: Path, stage_id: str):
    """The study's params and where a point's stored result is: its point.json in the run folder."""
    return study_params(run_dir, stage_id), lambda name, job: run_dir / stage_id / name / "point.json"


def ledger_points(config_path: Path, stage_id: str):
    """The study's params and where a point's stored result is: its entry in the study's ledger,
    found by the fingerprint the run would give it."""
    config = load_config(config_path)
    stages = {stage.id: stage for stage in config.stages}
    require_study({i: s.name for i, s in stages.items()}, stage_id, config_path)
    params = stages[stage_id].params
    if params.ledger is None:
        raise SystemExit(f"stage {stage_id!r} of {config_path} has no ledger: give its run folder instead")
    start = earlier = None
    if params.model.source == "stage":
        inputs = stage_inputs(config)[params.model.stage]
        if inputs:
            raise SystemExit(f"the study's model comes from stage {params.model.stage!r}, which reads {inputs}: "
                             f"its fingerprint holds their output ids, so only its run folder can say")
        start = stage_fingerprint(config, stages[params.model.stage], [])
        earlier = earlier_start_fingerprint(config, params.model.stage)
    study = ModerationStudy(params)
    return params, lambda name, job: entry_path(
        params.ledger, config.run.run_name, stage_id, name, study.fingerprint(job, start, config.run.seed),
        [study.fingerprint(job, earlier, config.run.seed, earlier=True)])


def finished(path: Path, metric: str) -> float | None:
    return float(read_json(path)["metrics"][metric]) if path.exists() else None


def progress_table(source: Path, stage_id: str, metric: str | None = None, floors: bool = False) -> str:
    """``source``: a run folder, or a config file whose study keeps a ledger; ``floors``: also the
    majority label and TF-IDF on the same evaluation examples (builds the study's dataset)."""
    points = ledger_points if source.suffix in (".yaml", ".yml", ".json") else run_points
    params, where = points(source, stage_id)
    metric = metric or params.metric
    base = finished(where("base", None), metric)
    lines = [f"{params.title}: {metric} on the {params.eval_split} split, finished points only "
             f"(starting model: {'not scored yet' if base is None else f'{base:.4f}'})", "",
             f"| recipe | {params.axis} | seeds done | scores | mean [95% t-interval] |", "|---|---|---|---|---|"]
    scores = {}
    for recipe in params.recipes:
        for value in params.values:
            done = {s: finished(where(point_name(params.axis, recipe, value, s), (recipe, value, s)), metric)
                    for s in params.seeds}
            done = {s: v for s, v in done.items() if v is not None}
            scores.update({(recipe, value, s): v for s, v in done.items()})
            if not done:
                lines.append(f"| {recipe} | {value} | 0 of {len(params.seeds)} | - | - |")
                continue
            ci = t_interval(list(done.values()))
            mean = f"{statistics.fmean(done.values()):.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            lines.append(f"| {recipe} | {value} | {len(done)} of {len(params.seeds)} | "
                         f"{', '.join(f'{v:.4f}' for v in done.values())} | {mean} |")
    if floors:
        lines += floor_table(params, metric)
    if base is not None:
        lines += fit_lines(params, scores, base)
    pairs = [(value, seed, scores[("rl", value, seed)] - scores[("sft", value, seed)])
             for value in params.values for seed in params.seeds
             if ("rl", value, seed) in scores and ("sft", value, seed) in scores]
    if pairs:
        lines += ["", "RL - SFT, same rung and seed: " + "; ".join(f"{params.axis} {v} seed {s}: {d:+.4f}"
                                                                  for v, s, d in pairs), *paired_summary(params, pairs)]
    return "\n".join(lines)


def floor_table(params: StudyParams, metric: str) -> list[str]:
    """The trivial rows on the study's evaluation examples, one column per rung."""
    ref = params.dataset
    splits = get_registry().build(ref.kind, ref.name, ref.params).splits()
    floors = ladder_floors(splits, params.axis, params.values, params.eval_split, params.eval_examples, metric)
    return ["", f"Floors, {metric} on the same {params.eval_split} examples:", "",
            "| floor | " + " | ".join(f"{params.axis} {v}" for v in params.values) + " |",
            "|---" * (len(params.values) + 1) + "|",
            *(f"| {name} | " + " | ".join(cells) + " |" for name, cells in floor_rows(floors, params.values))]


def paired_summary(params: StudyParams, pairs: list[tuple[int, int, float]]) -> list[str]:
    """The RL - SFT differences per rung and over every pair: mean [95% t-interval], and the
    Wilcoxon signed-rank p over every pair (exact for small counts)."""
    from scipy.stats import wilcoxon

    def summary(diffs: list[float]) -> str:
        ci = t_interval(diffs)
        return f"{statistics.fmean(diffs):+.4f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "") + \
            f" ({len(diffs)} pair{'s' if len(diffs) > 1 else ''})"

    by_rung: dict[int, list[float]] = {}
    for value, _, d in pairs:
        by_rung.setdefault(value, []).append(d)
    diffs = [d for _, _, d in pairs]
    overall = f"RL - SFT over every pair: {summary(diffs)}"
    if any(diffs):
        overall += f", Wilcoxon signed-rank p {wilcoxon(diffs).pvalue:.3g}"
    return ["RL - SFT mean per rung [95% t-interval]: " + "; ".join(
        f"{params.axis} {v}: {summary(d)}" for v, d in by_rung.items()), overall]


def fit_lines(params: StudyParams, scores: dict[tuple[str, int, int], float], base: float) -> list[str]:
    """The study's sigmoid fit to the means of the seeds done so far, per recipe with >= 4 rungs started."""
    by_rung: dict[tuple[str, int], list[float]] = {}
    for (recipe, value, _), score in scores.items():
        by_rung.setdefault((recipe, value), []).append(score)
    lines = []
    for recipe in params.recipes:
        rungs = [(v, by_rung[recipe, v]) for v in params.values if (recipe, v) in by_rung]
        means = [statistics.fmean(scores) for _, scores in rungs]
        fit = fit_sigmoid([v for v, _ in rungs], means, base) if len(rungs) >= 4 else None
        if fit:
            a, b, c_mid, r2 = fit_cells(fit)
            lines += [f"{recipe} fit so far ({len(rungs)} rungs, R0 {base:.4f}): A {a}, B {b}, C_mid {c_mid}, "
                      f"R^2 {r2}", shape_line(recipe, curve_shape(fit, rungs))]
    return ["", *lines] if lines else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a run folder, or a config file whose study keeps a ledger")
    parser.add_argument("stage", help="the study's stage id")
    parser.add_argument("--metric", default=None, help="a metric the points stored (default: the study's)")
    parser.add_argument("--no-floors", action="store_true",
                        help="leave out the majority-label and TF-IDF rows (they build the study's dataset)")
    args = parser.parse_args()
    print(progress_table(args.source, args.stage, args.metric, floors=not args.no_floors))


if __name__ == "__main__":
    main()
