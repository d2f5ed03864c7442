"""Per-step curves of several rl stages of one run: one panel per metric, one line per stage.

    python bench/rl_curves.py runs/moderation_reasons \
        --stage "label + format=rl_label" --stage "+ length=rl_length" --stage "+ rubric judge=rl_rubric" \
        --metric "metric/reasoning_words=reasoning words" --metric "metric/grounded_words=words found in the prompt" \
        --out docs/results/moderation_reasons.png

Reads each stage's history.json, draws the panels and prints the means over the first and the
last five steps (fewer for stages under ten steps) as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def series(run_dir: Path, stage: str, metric: str) -> list[float]:
    history = json.loads((run_dir / stage / "history.json").read_text())
    return [h.get(metric, float("nan")) for h in history]


def window_mean(values: list[float]) -> float:
    present = [v for v in values if v == v]
    return statistics.fmean(present) if present else float("nan")


def slope_cell(values: list[float]) -> str:
    """Least-squares slope over the steps that have the metric, with its 95% t-interval."""
    from scipy import stats

    points = [(step, v) for step, v in enumerate(values, 1) if v == v]
    if len(points) < 3:
        return "-"
    fit = stats.linregress(*zip(*points))
    half = stats.t.ppf(0.975, len(points) - 2) * fit.stderr
    return f"{fit.slope:+.3f} [{fit.slope - half:+.3f}, {fit.slope + half:+.3f}]"


def plot_curves(run_dir: Path, stages: dict[str, str], metrics: dict[str, str], out: Path | None,
                rates: bool = False) -> str:
    """Draw the panels (to ``out`` when given); return the first-5 / last-5 table. ``rates``: the
    metrics are shares in [0, 1], drawn on that scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    # five steps at each end, fewer when a stage is short, so that the two windows never overlap
    window = max(1, min(5, min(len(series(run_dir, stage, next(iter(metrics)))) for stage in stages.values()) // 2))
    lines = [f"| stage | metric | first {window} steps | last {window} steps | slope per step [95% CI] |",
             "|---|---|---|---|---|"]
    for ax, (metric, label) in zip(axes[0], metrics.items()):
        for name, stage in stages.items():
            values = series(run_dir, stage, metric)
            ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
            lines.append(f"| {name} | {metric} | {window_mean(values[:window]):.3f} | "
                         f"{window_mean(values[-window:]):.3f} | {slope_cell(values)} |")
        if rates:
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("RL step")
        ax.set_title(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
    plt.close(fig)
    return "\n".join(lines)


def pairs(values: list[str], flag: str) -> dict[str, str]:
    """``["label=value", ...]`` -> {label: value}."""
    out = {}
    for item in values:
        label, sep, value = item.rpartition("=")
        if not sep or not label or not value:
            raise SystemExit(f"{flag} {item!r}: write LABEL=VALUE, e.g. {flag} 'naive reward=rl_naive'")
        out[label] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--stage", action="append", required=True, help="LEGEND=STAGE_ID (repeat)")
    parser.add_argument("--metric", action="append", required=True, help="METRIC=PANEL TITLE (repeat), e.g. "
                        "'metric/reasoning_words=reasoning words'")
    parser.add_argument("--rates", action="store_true", help="draw every panel on [0, 1]")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print(plot_curves(args.run_dir, pairs(args.stage, "--stage"), pairs(args.metric, "--metric"), args.out, args.rates))
    if args.out:
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
