import pytest
from pydantic import BaseModel

from reasonrl.core.errors import ReasonRLError
from reasonrl.core.registry import (
    ComponentInfo,
    DuplicateComponentError,
    NoParams,
    Registry,
    UnknownComponentError,
)


class AlphaParams(BaseModel):
    alpha: float = 0.2


class GoodReward:
    def __init__(self, params):
        self.params = params

    def __call__(self, prompts, completions, examples):
        return [{"x": self.params.alpha} for _ in completions]


def info(name, factory=GoodReward, plugin="p1", params=AlphaParams):
    return ComponentInfo("reward_functions", name, factory, params, plugin, "pkg-" + plugin, "summary")


def test_duplicate_name_is_a_conflict_naming_both_origins():
    registry = Registry()
    registry.add(info("rank", plugin="first"))
    registry.add(info("rank", plugin="second"))
    registry.add(info("other", plugin="second"))
    with pytest.raises(DuplicateComponentError) as err:
        registry.build("reward_functions", "rank", {})
    assert "'first'" in str(err.value) and "'second'" in str(err.value)
    assert "pkg-first" in str(err.value) and "pkg-second" in str(err.value)
    assert registry.build("reward_functions", "other", {})([""], ["x"], [{}]) == [{"x": 0.2}]
    registry.remove_plugin("second")  # the conflict ends with one of its plugins
    assert registry.get("reward_functions", "rank").plugin == "first"


def test_same_name_in_two_kinds_is_fine():
    registry = Registry()
    registry.add(info("x"))
    registry.add(ComponentInfo("metrics", "x", GoodReward, NoParams, "p1", "pkg", ""))
    assert registry.names("metrics") == ["x"]


def test_unknown_name_lists_known_and_closest():
    registry = Registry()
    registry.add(info("conditional_rank"))
    registry.add(info("format"))
    with pytest.raises(UnknownComponentError) as err:
        registry.get("reward_functions", "conditonal_rank")
    message = str(err.value)
    assert "known: conditional_rank, format" in message
    assert "Did you mean 'conditional_rank'?" in message


def test_unknown_kind():
    with pytest.raises(ReasonRLError, match="unknown component kind 'rewards'"):
        Registry().names("rewards")


def test_build_validates_params_and_calls_factory():
    registry = Registry()
    registry.add(info("r"))
    reward = registry.build("reward_functions", "r", {"alpha": 0.5})
    assert reward([""], ["a", "b"], [{}, {}]) == [{"x": 0.5}, {"x": 0.5}]
    with pytest.raises(ReasonRLError, match="bad params for reward_functions 'r'"):
        registry.build("reward_functions", "r", {"alpha": "high"})


def test_build_checks_contract():
    registry = Registry()
    registry.add(info("broken", factory=lambda params: object()))
    with pytest.raises(ReasonRLError, match="does not satisfy RewardFunction"):
        registry.build("reward_functions", "broken")


def test_lazy_factory_string_resolves_and_reports_bad_target():
    registry = Registry()
    registry.add(info("weighted", factory="reasonrl.plugins.rewards:nothing_here"))
    with pytest.raises(ReasonRLError, match="cannot be loaded"):
        registry.build("reward_functions", "weighted")


def test_failed_plugin_is_mentioned_for_unknown_names():
    registry = Registry()
    registry.failed_plugins["broken_pack"] = "ImportError: no module named x"
    with pytest.raises(UnknownComponentError, match="broken_pack.*failed to load"):
        registry.get("reward_functions", "anything")
