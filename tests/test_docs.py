"""The documentation site builds in strict mode, its generated pages follow the code, and
the optimizer tutorial's code trains."""

import html
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                             "-d", str(out)], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_site_builds_strict_with_every_nav_page(site):
    for source, page in (("index.md", "index.html"), ("tutorials/write-an-optimizer.md",
                                                       "tutorials/write-an-optimizer/index.html"),
                         ("results/gr2.md", "results/gr2/index.html")):
        title = (ROOT / "docs" / source).read_text().splitlines()[0].removeprefix("# ")
        assert f">{html.escape(title, quote=False)}<" in (site / page).read_text(), page  # the page's own heading
    for page in ("api/components/index.html", "api/params/index.html"):
        assert "<table>" in (site / page).read_text(), page
    assert 'id="reasonrl-run"' in (site / "api" / "cli" / "index.html").read_text()


def test_generated_reference_follows_the_code(site, reasonrl_registry):
    from reasonrl.core.hookspecs import KINDS

    components = (site / "api" / "components" / "index.html").read_text()
    assert all(f"<code>{kind}</code>" in components for kind in KINDS)
    params = (site / "api" / "params" / "policy_optimizers" / "index.html").read_text()
    described = reasonrl_registry.get("policy_optimizers", "dapo").params_model().model_fields["epsilon_high"]
    assert described.description in params.replace("&#39;", "'")
    cli = (site / "api" / "cli" / "index.html").read_text()
    assert "--push-to-hub" in cli and "--max-concurrency" in cli and "--params" in cli


def test_the_optimizer_tutorial_code_trains(tmp_path, register_plugin):
    from reasonrl.core.config import resolve_config
    from reasonrl.core.pipeline import run_pipeline

    text = (ROOT / "docs" / "tutorials" / "write-an-optimizer.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    module = types.ModuleType("rloo_tutorial")
    exec(compile(code, "write-an-optimizer.md", "exec"), module.__dict__)
    register_plugin(module, name="rloo_tutorial")
    stage = {"stage": "rl", "model": {"source": "tiny", "tiny": {"hidden_size": 32}}, "dataset": "sort_digits",
             "rewards": ["sort_accuracy"], "optimizer": {"name": "rloo", "params": {"epsilon": 0.2}},
             "rollout": {"name": "hf", "params": {"max_new_tokens": 5}}, "steps": 2, "prompts_per_step": 2,
             "group_size": 4, "progress": False}
    config = resolve_config({"run_name": "rloo", "output_dir": str(tmp_path), "stages": [stage]})
    run_pipeline(config, echo=lambda *_: None)
    from reasonrl.plugins.tracking.trackers import read_metrics

    rows = read_metrics(config.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all("rl/optim/ratio_mean" in r for r in rows)


def test_rloo_advantages_by_hand():
    import torch

    from reasonrl.core.contracts import RolloutBatch

    text = (ROOT / "docs" / "tutorials" / "write-an-optimizer.md").read_text()
    namespace: dict = {}
    exec(compile(re.findall(r"```python\n(.*?)```", text, re.S)[0], "tutorial", "exec"), namespace)
    rloo = namespace["RLOO"](namespace["RLOOParams"]())
    batch = RolloutBatch(prompt_ids=[torch.tensor([1])], completion_ids=torch.zeros(3, 2, dtype=torch.long),
                         mask=torch.tensor([[1, 1], [1, 0], [1, 1]]), old_logprobs=torch.zeros(3, 2),
                         rewards=torch.tensor([1.0, 0.0, 2.0]), groups=torch.zeros(3, dtype=torch.long),
                         truncated=torch.zeros(3, dtype=torch.bool), group_size=3)
    prepared = rloo.prepare(batch)
    # baselines: (0+2)/2 = 1, (1+2)/2 = 1.5, (1+0)/2 = 0.5 -> advantages 0, -1.5, 1.5 on the masked tokens
    assert prepared.advantages.tolist() == [[0.0, 0.0], [-1.5, 0.0], [1.5, 1.5]] and batch.advantages is None
    loss, _ = rloo.loss(prepared, torch.zeros(3, 2))
    assert loss.item() == pytest.approx(-(0 + 0 - 1.5 + 1.5 + 1.5) / 5)


def test_reference_pages_render_types_roles_and_defaults_as_a_reader_expects(site):
    pages = [p for p in (site / "api").rglob("index.html")] + [site / "examples" / "index.html"]
    assert len(pages) >= 18  # contracts, the params overview, one params page per kind, cli, python api
    for page in pages:
        text = page.read_text()
        assert "\\|" not in text, page  # a pipe escaped inside a code span shows its backslash
        # source listings and values keep their docstrings as written
        prose = re.sub(r"<pre.*?</pre>|<code[^>]*>.*?</code>", "", text, flags=re.S)
        for role in (":class:", ":func:", ":meth:", ":data:", "``"):
            assert role not in prose, (page, role)
    stages = (site / "api" / "params" / "stages" / "index.html").read_text()
    assert "<code>int &#124; None</code>" in stages
    # defaults as a config file writes them, not as Python reprs
    assert "<code>[{name: jsonl, params: {}}]</code>" in (site / "api" / "params" / "index.html").read_text()
    assert "<code>None</code>" not in stages and "<code>null</code>" in stages
    assert 'id="reasonrl-config"' in (site / "api" / "cli" / "index.html").read_text()
    python_api = (site / "api" / "python" / "index.html").read_text()
    assert "Reranker" in python_api and "from_run" in python_api and "register_plugin" in python_api
    examples = (site / "examples" / "index.html").read_text()
    assert all(f"<code>{p.name}</code>" in examples for p in (ROOT / "examples").glob("*.yaml"))
    architecture = (site / "architecture" / "index.html").read_text()
    assert "{{ kinds_table }}" not in architecture and "<code>prepare(batch)</code>" in architecture
    assert not list(site.rglob("*.json")) or all("ledger" not in str(p) for p in site.rglob("*.json"))


def test_the_quickstart_config_on_the_home_page_runs(tmp_path, reasonrl_registry):
    import yaml

    from reasonrl.core.config import resolve_config
    from reasonrl.core.pipeline import run_pipeline

    text = (ROOT / "docs" / "index.md").read_text()
    data = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", text, re.S)[0])
    data["output_dir"] = str(tmp_path)
    config = resolve_config(data, ["stages[1].steps=2", "stages[0].progress=false", "stages[1].progress=false"])
    outputs = run_pipeline(config, echo=lambda m: None)
    assert outputs["rl"]["steps"] == 2 and outputs["sft"]["steps"] > 0
    for name in ("config.resolved.yaml", "metrics.jsonl", "sft", "rl"):
        assert (config.run_dir / name).exists(), name  # what the page says a run folder holds
