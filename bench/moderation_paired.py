"""Paired differences of per-example evaluation fields between the rows of a moderation_evaluate stage.

    python bench/moderation_paired.py runs/moderation_reasons_and_calibration/evaluate \
        --field reasoning_words --field cites_content --field grounded_words

For each comparison in the stage's report.json (or each --pair BASELINE=VARIANT), the mean of
each field over the same examples, variant minus baseline, with a paired bootstrap 95%
interval (examples resampled jointly). An example where either row has no value (no reasoning
words) is left out of that field's comparison, and the table says how many remained.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def outputs(stage_dir: Path, variant: str) -> list[dict]:
    name = "".join(c if c.isalnum() else "_" for c in variant)
    return [json.loads(line) for line in (stage_dir / f"outputs_{name}.jsonl").read_text().splitlines()]


def paired_field(baseline: list[dict], variant: list[dict], field: str, samples: int = 2000) -> dict:
    from reasonrl.moderation_plugins.metrics import paired_metric_bootstrap

    kept = [(b[field], v[field]) for b, v in zip(baseline, variant, strict=True)
            if b.get(field) is not None and v.get(field) is not None]
    if not kept:
        return {"difference": float("nan"), "ci95": (float("nan"), float("nan")), "examples": 0}
    return paired_metric_bootstrap([None] * len(kept), [b for b, _ in kept], [v for _, v in kept],
                                   lambda values, _: statistics.fmean(values), samples)


def table(stage_dir: Path, pairs: list[tuple[str, str]], fields: list[str]) -> str:
    lines = ["| field | comparison | baseline mean | variant mean | difference | 95% CI | examples |",
             "|---|---|---|---|---|---|---|"]
    for field in fields:
        for baseline, variant in pairs:
            rows_b, rows_v = outputs(stage_dir, baseline), outputs(stage_dir, variant)
            result = paired_field(rows_b, rows_v, field)
            means = [statistics.fmean([r[field] for r in rows if r.get(field) is not None] or [float("nan")])
                     for rows in (rows_b, rows_v)]
            low, high = result["ci95"]
            lines.append(f"| {field} | {variant} - {baseline} | {means[0]:.3f} | {means[1]:.3f} | "
                         f"{result['difference']:+.3f} | [{low:+.3f}, {high:+.3f}] | {result['examples']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage_dir", type=Path)
    parser.add_argument("--field", action="append", required=True, help="a per-example output field (repeat)")
    parser.add_argument("--pair", action="append", default=[], help="BASELINE=VARIANT (default: the report's "
                        "comparisons)")
    args = parser.parse_args()
    if args.pair:
        pairs = [tuple(p.split("=", 1)) for p in args.pair]
    else:
        pairs = [(c["baseline"], c["variant"]) for c in json.loads((args.stage_dir / "report.json").read_text())
                 ["comparisons"]]
    print(table(args.stage_dir, pairs, args.field))


if __name__ == "__main__":
    main()
