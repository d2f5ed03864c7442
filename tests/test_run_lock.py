"""One writer per run folder: a second run of the same folder stops at once and changes nothing."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reasonrl.core.pipeline import run_pipeline
from reasonrl.core.runlock import HOLDERS_DIR, RunFolderBusy, RunLock
from reasonrl.plugins.engine.rl import RLStage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trustworthy_runs import QUIET, rl_weights, sort_run  # noqa: E402


def test_a_second_run_while_one_trains_stops_at_once_and_the_first_ends_as_if_alone(tmp_path, reasonrl_registry,
                                                                                  monkeypatch):
    refused = []
    original = RLStage.train_step

    def meanwhile(self, step, *args):
        if step == 1 and not refused:
            # the same folder, an edited config and --force: exactly what used to delete the live stage
            with pytest.raises(RunFolderBusy) as caught:
                run_pipeline(sort_run(tmp_path / "shared", rl_steps=20), force=["rl"], **QUIET)
            refused.append(str(caught.value))
        return original(self, step, *args)

    monkeypatch.setattr(RLStage, "train_step", meanwhile)
    run_pipeline(sort_run(tmp_path / "shared"), **QUIET)
    monkeypatch.setattr(RLStage, "train_step", original)
    run_pipeline(sort_run(tmp_path / "alone"), **QUIET)

    assert refused and f"pid {os.getpid()} on host {socket.gethostname()}" in refused[0]
    assert "Nothing was changed" in refused[0]
    shared, alone = rl_weights(tmp_path / "shared"), rl_weights(tmp_path / "alone")
    assert shared.keys() == alone.keys()
    for name in alone:
        torch.testing.assert_close(shared[name], alone[name], rtol=0, atol=0)
    saved = (tmp_path / "shared" / "r" / "config.resolved.yaml").read_text()
    assert "steps: 3" in saved and "steps: 20" not in saved  # the saved config is the run that ran
    assert not list((tmp_path / "shared" / "r" / HOLDERS_DIR).iterdir())  # released at the end


HOLD = """
import sys, time
from reasonrl.core.runlock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_the_lock_of_another_process_names_it_and_a_dead_holder_does_not_block(tmp_path, reasonrl_registry):
    run_dir = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=f"pid {holder.pid} on host .* \\(exclusive\\)"):
            run_pipeline(sort_run(tmp_path), **QUIET)
        assert not (run_dir / "sft").exists()  # refused before planning or deleting anything
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: no cleanup runs
        holder.wait()
    assert len(list((run_dir / HOLDERS_DIR).iterdir())) == 1  # the dead holder's note is left behind...
    outputs = run_pipeline(sort_run(tmp_path), **QUIET)  # ...and the OS released its lock
    assert set(outputs) == {"sft", "rl"}


def test_the_lock_is_held_for_the_run_and_released_after_a_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with RunLock(tmp_path):
            with pytest.raises(RunFolderBusy):
                with RunLock(tmp_path):
                    pass
            raise RuntimeError("the stage failed")
    started = time.monotonic()
    with RunLock(tmp_path):
        pass
    assert time.monotonic() - started < 1.0


def test_shared_holders_run_side_by_side_and_keep_an_exclusive_run_out(tmp_path):
    with RunLock(tmp_path, shared=True), RunLock(tmp_path, shared=True):
        with pytest.raises(RunFolderBusy, match=r"\(shared\)"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):
        with pytest.raises(RunFolderBusy, match=r"\(exclusive\)"):
            with RunLock(tmp_path, shared=True):
                pass


class Worker:
    """A stage built for several workers in one folder; the first one starts a second worker."""

    shares_run_folder = True
    seen: list = []

    def __init__(self, params):
        self.params = params

    def run(self, context):
        Worker.seen.append(context.stage_id)
        if len(Worker.seen) == 1:
            run_pipeline(Worker.config, **QUIET)  # a second worker, same folder, while this one holds it
        return {"workers": len(Worker.seen)}


def test_workers_of_a_shared_stage_run_side_by_side_but_a_forced_run_is_kept_out(tmp_path, register_plugin):
    import types

    from reasonrl import hookimpl
    from reasonrl.core.config import resolve_config

    plugin = types.ModuleType("workers")
    plugin.register_stages = hookimpl(lambda register: register("worker", Worker))
    register_plugin(plugin, name="workers")
    Worker.seen = []
    Worker.config = resolve_config({"run_name": "r", "output_dir": str(tmp_path),
                                    "stages": [{"stage": "worker", "id": "study"}]})
    run_pipeline(Worker.config, **QUIET)
    assert Worker.seen == ["study", "study"]  # the second worker was let in
    Worker.seen = []
    with pytest.raises(RunFolderBusy, match=r"\(exclusive\).*cannot start alongside it"):
        # the outer run is forced, so exclusive: the second worker is refused
        run_pipeline(Worker.config, force=["study"], **QUIET)
