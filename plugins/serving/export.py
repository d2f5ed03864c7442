"""``reasonrl export STAGE_DIR --to DIR [--push-to-hub REPO]``: a trained stage as a plain
transformers folder with a model card (base model, data and licence, recipe, metrics from the
run's reports, the exact config and the command that reproduces it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.manager import get_registry

CONFIG_NAME = "reasonrl_config.yaml"
UNKNOWN_DATA = ("your data", "state your data's licence")


def _component(registry, kind: str, name):
    """The registered class (or factory) of ``name``, or None when this install lacks it."""
    try:
        return registry.get(kind, name).resolve_factory()
    except (ReasonRLError, ImportError):  # a card is still written for components this install lacks
        return None


class RunInfo:
    """What the card needs from a run folder: its resolved config and stage entries."""

    def __init__(self, stage_dir: Path) -> None:
        self.stage_dir, self.run_dir, self.stage_id = stage_dir, stage_dir.parent, stage_dir.name
        config_path = self.run_dir / "config.resolved.yaml"
        if not (stage_dir / "model" / "config.json").exists():
            raise ReasonRLError(f"{stage_dir} holds no trained model (model/config.json): pass the folder of a "
                                f"finished sft, lm or rl stage, e.g. runs/NAME/rl")
        if not config_path.exists():
            raise ReasonRLError(f"{config_path} is missing: export needs the run folder the stage was trained in")
        self.config_text = config_path.read_text(encoding="utf-8")
        self.config = yaml.safe_load(self.config_text)
        self.stages = {s["id"]: s for s in self.config["stages"]}
        if self.stage_id not in self.stages:
            raise ReasonRLError(f"stage {self.stage_id!r} is not in {config_path}; stages: {sorted(self.stages)}")

    def lineage(self) -> list[dict]:
        """The training stages from the base model to this one, oldest first."""
        chain, stage = [], self.stages[self.stage_id]
        while True:
            chain.append(stage)
            model = stage.get("model") or {}
            if model.get("source") != "stage" or model.get("stage") not in self.stages:
                return chain[::-1]
            stage = self.stages[model["stage"]]

    def base_model(self) -> tuple[str | None, str | None, str]:
        """(Hub id or None, licence or None, description) of the model the lineage starts from."""
        from reasonrl.plugins.engine.models import PACKAGED_ORIGINS

        model = self.lineage()[0].get("model") or {}
        source = model.get("source", "tiny")
        if source == "packaged" and model.get("name") in PACKAGED_ORIGINS:
            hub_id, licence = PACKAGED_ORIGINS[model["name"]]
            return hub_id, licence, hub_id
        if source == "hf":
            name = model.get("name") or model.get("path")
            return (name if name and not Path(name).exists() else None), None, str(name)
        if source == "tiny":
            return None, None, "a small randomly initialised model (no pretrained base)"
        return None, None, f"{source}: {model.get('path') or model.get('gguf_file')}"

    def data(self) -> list[tuple[str, str, str]]:
        """(dataset name, description, licence) of every dataset the run read, as the components
        say it: a stage's ``data_cards(entry)`` (data it loads itself), a dataset's ``card``."""
        registry, found = get_registry(), {}
        for stage in self.config["stages"]:
            stage_class = _component(registry, "stages", stage.get("stage"))
            if hasattr(stage_class, "data_cards"):  # the stage loads its data itself
                found.update({name: tuple(card) for name, *card in stage_class.data_cards(stage)})
                continue
            dataset = stage.get("dataset")
            name = dataset.get("name") if isinstance(dataset, dict) else dataset
            if isinstance(name, str) and name != "jsonl":  # jsonl: an earlier stage's output, already listed
                found[name] = getattr(_component(registry, "datasets", name), "card", None) or UNKNOWN_DATA
        return [(name, *info) for name, info in found.items()]

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Report rows of evaluation stages that evaluated this stage's model, followed by the
        same reports' reference rows (pre-ranker, TF-IDF floor, untrained model) for context."""
        ours, references = {}, {}
        for stage in self.config["stages"]:
            report = self.run_dir / stage["id"] / "report.json"
            if not report.exists():
                continue
            rows = json.loads(report.read_text(encoding="utf-8")).get("rows", {})
            for variant in stage.get("variants") or []:
                name = variant.get("name")
                if name not in rows:
                    continue
                if variant.get("stage") == self.stage_id:
                    ours[f"{stage['id']}: {name}"] = rows[name]
                elif variant.get("stage") is None:
                    references[f"{stage['id']}: {name} (reference)"] = rows[name]
        return {**ours, **references} if ours else {}


def recipe_lines(info: RunInfo) -> list[str]:
    lines = []
    for stage in info.lineage():
        keys = ["optimizer", "rewards", "combiner", "steps", "epochs", "lr", "group_size", "prompts_per_step"]
        shown = {k: _short(stage[k]) for k in keys if k in stage}
        lines.append(f"- `{stage['id']}` ({stage['stage']}): " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return lines


def _short(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        return value["name"]
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def metrics_table(metrics: dict[str, dict[str, Any]]) -> list[str]:
    if not metrics:
        return ["No evaluation stage of this run evaluated this model."]
    names = sorted({k for row in metrics.values() for k, v in row.items() if isinstance(v, (int, float))})
    lines = ["| evaluation | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for where, row in metrics.items():
        cells = [f"{row[n]:.4f}" if isinstance(row.get(n), float) else str(row.get(n, "")) for n in names]
        lines.append(f"| {where} | " + " | ".join(cells) + " |")
    return lines


def model_card(info: RunInfo):
    """A ``huggingface_hub.ModelCard``: metadata in its YAML header, the story in its body."""
    from huggingface_hub import ModelCard, ModelCardData

    hub_id, licence, base_text = info.base_model()
    data = info.data()
    optimizers = sorted({_short(s["optimizer"]) for s in info.lineage() if "optimizer" in s})
    card_data = ModelCardData(base_model=hub_id, license=licence, library_name="transformers",
                              pipeline_tag="text-generation", tags=["reasonrl", *optimizers])
    body = [
        f"# {info.run_dir.name}/{info.stage_id}", "",
        f"Trained with reasonrl: stage `{info.stage_id}` of run `{info.run_dir.name}`.", "",
        "## Base model", "", base_text + (f" (licence: {licence})" if licence else ""), "",
        "## Data", "",
        *([f"- `{name}`: {what}; licence: {lic}" for name, what, lic in data] or ["(no dataset recorded)"]), "",
        "## Recipe", "", *recipe_lines(info), "",
        "## Metrics", "", *metrics_table(info.metrics()), "",
        "## Reproduce", "",
        f"The exact config is `{CONFIG_NAME}` in this folder (also below). With reasonrl installed:", "",
        "```bash", f"reasonrl run {CONFIG_NAME}", "```", "",
        f"The model is the `{info.stage_id}` stage's output, `runs/{info.run_dir.name}/{info.stage_id}/model`.", "",
        "```yaml", info.config_text.rstrip(), "```", "",
    ]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body))


def export_stage(stage_dir: str | Path, to: str | Path, force: bool = False) -> Path:
    """Copy the stage's model (safetensors, config, tokenizer) and write the card; atomic."""
    info = RunInfo(Path(stage_dir))
    target = Path(to)
    if target.exists() and any(target.iterdir()) and not force:
        raise ReasonRLError(f"{target} exists and is not empty; choose another --to or pass --force")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(info.stage_dir / "model", staging)
    shutil.copy2(info.run_dir / "config.resolved.yaml", staging / CONFIG_NAME)
    if (info.run_dir / "versions.json").exists():
        shutil.copy2(info.run_dir / "versions.json", staging / "reasonrl_versions.json")
    model_card(info).save(staging / "README.md")
    if target.exists():
        shutil.rmtree(target)
    staging.replace(target)
    return target


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Create the repo if needed and upload the folder; the token comes from ``HF_TOKEN`` or the
    huggingface_hub login, never from the command line."""
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload a reasonrl export")
    return str(url)


class ExportCommand:
    """``reasonrl export STAGE_DIR --to DIR [--push-to-hub REPO]``."""

    def __init__(self, params=None) -> None:
        self.params = params

    def add_arguments(self, parser) -> None:
        parser.add_argument("stage_dir", help="a finished training stage's folder, e.g. runs/NAME/rl")
        parser.add_argument("--to", required=True, help="the folder to write (a plain transformers model folder)")
        parser.add_argument("--force", action="store_true", help="replace --to when it is not empty")
        parser.add_argument("--push-to-hub", metavar="REPO", help="also upload to this Hub repo (token: HF_TOKEN)")
        parser.add_argument("--private", action="store_true", help="create the Hub repo private")

    def run(self, args) -> int:
        folder = export_stage(args.stage_dir, args.to, args.force)
        print(f"exported {args.stage_dir} to {folder} (load it with AutoModelForCausalLM.from_pretrained)")
        if args.push_to_hub:
            print(f"pushed to {push_to_hub(folder, args.push_to_hub, args.private)}")
        return 0
