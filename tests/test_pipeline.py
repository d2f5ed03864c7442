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
    extra: int = 3  # plays the option a newer version added


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


def config(run_dir, registry, fail_second=False, **first):
    data = {"run_name": "r", "output_dir": str(run_dir),
            "stages": [{"stage": "count", "id": "a", **first}, {"stage": "count", "id": "b", "fail": fail_second}]}
    return resolve_config(data, registry=registry)


def made_by_an_older_version(resolved, stage_id="a", legacy=False):
    """Rewrite a finished stage's marker as a version without the ``extra`` option would have:
    its fingerprint from params without it, and no ``extra`` among its keys (or no keys at all,
    as markers before param_keys, with the saved config lacking it instead)."""
    from reasonrl.core.pipeline import stage_fingerprint, stage_inputs

    stage = next(s for s in resolved.stages if s.id == stage_id)
    old_params = {k: v for k, v in stage.params.model_dump(mode="json").items() if k != "extra"}
    path = resolved.run_dir / stage_id / MARKER
    marker = json.loads(path.read_text())
    marker["fingerprint"] = stage_fingerprint(resolved, stage, stage_inputs(resolved)[stage_id], old_params)
    if legacy:
        del marker["param_keys"]
        saved = resolved.run_dir / "config.resolved.yaml"
        saved.write_text("".join(line for line in saved.read_text().splitlines(True) if line.strip() != "extra: 3"))
    else:
        marker["param_keys"] = sorted(old_params)
    path.write_text(json.dumps(marker))
    return marker


@pytest.mark.parametrize("legacy", [False, True], ids=["param_keys", "saved_config"])
def test_options_a_newer_version_added_at_their_defaults_do_not_make_a_run_stale(counting, run_dir, legacy):
    from reasonrl.core.pipeline import StaleStageError

    run_pipeline(config(run_dir, counting), echo=lambda m: None)
    old = made_by_an_older_version(config(run_dir, counting), legacy=legacy)
    run_pipeline(config(run_dir, counting), echo=lambda m: None)
    assert CALLS == ["a", "b"]  # nothing reran: the new option is at its default
    marker = json.loads((run_dir / "r" / "a" / MARKER).read_text())
    assert marker["adopted_defaults"] == ["extra"] and marker["output_id"] == old["output_id"]
    assert marker["fingerprint"] != old["fingerprint"] and "extra" in marker["param_keys"]
    # set to anything but its default, the new option is an edit like any other
    made_by_an_older_version(config(run_dir, counting), legacy=legacy)
    with pytest.raises(StaleStageError, match=r"stage\(s\) \['a'\]"):
        run_pipeline(config(run_dir, counting, extra=5), echo=lambda m: None)


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


def test_threads_are_applied_and_recorded(counting, run_dir):
    import torch

    before = torch.get_num_threads()
    data = {"run_name": "r", "output_dir": str(run_dir), "threads": 1, "stages": [{"stage": "count", "id": "a"}]}
    try:
        run_pipeline(resolve_config(data, registry=counting), echo=lambda m: None)
        recorded = json.loads((run_dir / "r" / "versions.json").read_text())["threads"]
        assert torch.get_num_threads() == 1 and recorded["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ReasonRLError, match="threads"):
        resolve_config(dict(data, threads=0), registry=counting)


def test_a_server_on_this_machine_without_a_thread_split_is_warned_about(counting, run_dir, monkeypatch):
    import torch

    from reasonrl.plugins.engine.threads import loopback_urls

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    raw = {"stages": [{"judge": {"params": {"base_url": "http://127.0.0.1:8000/v1"}}},
                      {"base_url": "https://api.example.com/v1"}]}
    assert loopback_urls(raw) == [("stages[0].judge.params.base_url", "http://127.0.0.1:8000/v1")]
    for threads, warned in ((None, True), (2, False)):
        messages = []
        before = torch.get_num_threads()
        local = {"base_url": "http://localhost:8000/v1"}
        data = {"run_name": "r", "output_dir": str(run_dir / str(threads)), "threads": threads,
                "stages": [{"stage": "count", "id": "a", **local}]}
        try:
            run_pipeline(resolve_config(data, registry=counting), echo=messages.append)
        finally:
            torch.set_num_threads(before)
        warnings = [m for m in messages if m.startswith("warning: stages[0].base_url = http://localhost:8000/v1")]
        assert bool(warnings) == warned
        assert all("reasonrl serve ... --threads" in m for m in warnings)
