"""Registers the generic built-in components. Imports no torch: factories are lazy."""

from __future__ import annotations

from reasonrl.core.hookspecs import hookimpl
from reasonrl.plugins import params as p

P = "reasonrl.plugins"


@hookimpl
def register_trackers(register):
    register("jsonl", f"{P}.trackers:JsonlTracker", params=p.JsonlParams, summary="metrics as JSON lines in the run folder")
    register("tensorboard", f"{P}.trackers:TensorboardTracker", params=p.TensorboardParams,
             summary="metrics as TensorBoard scalars (extra: tensorboard)")


@hookimpl
def register_reward_combiners(register):
    register("weighted_sum", f"{P}.rewards:WeightedSum", params=p.WeightedSumParams,
             summary="sum of weight * component over the components that apply")
