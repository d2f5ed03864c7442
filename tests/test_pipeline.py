import json
import types

import pytest
from pydantic import BaseModel

from reasonrl import hookimpl
from reasonrl.core.config import resolve_config
from reasonrl.core.errors import ReasonRLError
from reasonrl.core.pipeline import MARKER, run_pipeline

CALLS = []


class CountParams(BaseModel):
    fail: bool = False


class CountingStage:
    def __init__(self, params):
        self.params = params

    def run(self, context):
        CALLS.append(context.stage_id)
        (context.stage_dir / "artifact.txt").write_text("x")
        if self.params.fail:
            raise RuntimeError("boom")
        context.log(1, {"value": 1.0})
        return {"stage": context.stage_id, "earlier": sorted(context.outputs)}


@pytest.fixture
def counting(register_plugin):
    plugin = types.ModuleType("counting_pack")

    @hookimpl
    def register_stages(register):
        register("count", CountingStage, params=CountParams, summary="counts calls")

    plugin.register_stages = register_stages
    CALLS.clear()
    return register_plugin(plugin, name="counting_pack")


def config(run_dir, registry, fail_second=False):
    data = {"run_name": "r", "output_dir": str(run_dir),
            "stages": [{"stage": "count", "id": "a"}, {"stage": "count", "id": "b", "fail": fail_second}]}
    return resolve_config(data, registry=registry)


def test_stages_run_in_order_and_are_skipped_when_finished(counting, run_dir):
    outputs = run_pipeline(config(run_dir, counting), echo=lambda m: None)
    assert CALLS == ["a", "b"] and outputs["b"]["earlier"] == ["a"]
    run_pipeline(config(run_dir, counting), echo=lambda m: None)
    assert CALLS == ["a", "b"]
    run_pipeline(config(run_dir, counting), force=["b"], echo=lambda m: None)
    assert CALLS == ["a", "b", "b"]
    saved = run_dir / "r"
    assert (saved / "config.resolved.yaml").exists()
    assert "pydantic" in json.loads((saved / "versions.json").read_text())["packages"]
    lines = [json.loads(line) for line in (saved / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["a/value"] == 1.0


def test_failed_stage_leaves_no_marker_and_keeps_earlier_work(counting, run_dir):
    with pytest.raises(RuntimeError, match="boom"):
        run_pipeline(config(run_dir, counting, fail_second=True), echo=lambda m: None)
    assert (run_dir / "r" / "a" / MARKER).exists()
    assert not (run_dir / "r" / "b" / MARKER).exists()
    run_pipeline(config(run_dir, counting), echo=lambda m: None)
    assert CALLS == ["a", "b", "b"]  # a skipped, b repeated


def test_force_unknown_stage(counting, run_dir):
    with pytest.raises(ReasonRLError, match=r"no such stage id; this config's stages are \['a', 'b'\]"):
        run_pipeline(config(run_dir, counting), force=["c"], echo=lambda m: None)
