"""How much a moderation task's label is already in the untrained student: one table.

For each task, the score of an example is log p("<positive>") - log p("<negative>") at the
position after "Label: ", appended to the chat-formatted prompt (no reasoning); ROC-AUC of
that score on the task's validation examples says how much a warm start or RL can build on.
0.5: no signal.

    python bench/moderation_zero_shot.py
    python bench/moderation_zero_shot.py --tasks prompt_injection --examples 40 --max-chars 300
"""

from __future__ import annotations

import argparse
import random

from moderation_probe import decision_features, decision_inputs  # bench/ is on sys.path when run as a script
from sklearn.metrics import roc_auc_score

from reasonrl.core.manager import get_registry
from reasonrl.plugins.engine.models import ModelSpec, load_policy

TASKS = ("prompt_injection", "spam_email", "harmful_response", "risk_area")


def task_row(model, tokenizer, task: str, examples: int, max_chars: int) -> str:
    rows = get_registry().build("datasets", task, {"max_chars": max_chars}).splits()["validation"]
    rows = random.Random(0).sample(rows, min(examples, len(rows)))
    labels = rows[0]["labels"]
    if len(labels) != 2:
        return f"| {task} | {len(rows)} | - | a {len(labels)}-label task: no binary margin | - |"
    prompts = [r["prompt"] for r in rows]
    _, margins = decision_features(model, tokenizer, prompts, labels)
    lengths = [len(ids) for ids in decision_inputs(tokenizer, prompts)]
    gold = [r["label"] == labels[-1] for r in rows]
    auc = roc_auc_score(gold, margins.tolist()) if 0 < sum(gold) < len(gold) else float("nan")
    return f"| {task} | {len(rows)} | {sum(gold)} | {auc:.3f} | {sum(lengths) / len(lengths):.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS[:3]), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--examples", type=int, default=40, help="validation examples per task (at most)")
    parser.add_argument("--max-chars", type=int, default=300, help="content cut, as the dataset's max_chars")
    args = parser.parse_args()
    model, tokenizer = load_policy(ModelSpec(source="packaged", name="smollm2-135m-instruct"), None)
    model.eval()
    print(f"Untrained SmolLM2-135M-Instruct, validation examples, content cut to {args.max_chars} characters.\n")
    print("| task | examples | positive | ROC-AUC of the label margin | prompt tokens |")
    print("|---|---|---|---|---|")
    for task in args.tasks.split(","):
        print(task_row(model, tokenizer, task, args.examples, args.max_chars), flush=True)


if __name__ == "__main__":
    main()
