"""Every hook is documented as a contract and exercised by a test of its own."""

import inspect
from pathlib import Path

import pytest

from reasonrl import hookimpl
from reasonrl.core import contracts, hookspecs
from reasonrl.core.contracts import Verdict
from reasonrl.core.hookspecs import KINDS


class Tok:
    codes = [[0]]

    def fit(self, embeddings):
        return self

    def vocabulary(self):
        return ["<a_0>"]

    def encode(self, embeddings):
        return [[0]]

    def tokens(self, codes):
        return ["<a_0>"]

    def report(self):
        return {"uniqueness": 1.0}


class Teacher:
    def generate(self, prompts, n=1):
        return [["trace"] * n for _ in prompts]


class Filter:
    def check(self, example, completion):
        return Verdict(accepted="ok" in completion, reason="needs ok")


class Optim:
    needs_reference = False
    needs_values = False

    def keep_group(self, rewards):
        return True

    def prepare(self, batch):
        return batch

    def loss(self, batch, new_logprobs, **extra):
        return 0.0, {}


class Reward:
    def __call__(self, prompts, completions, examples):
        return [{"r": 1.0} for _ in completions]


class Combiner:
    def combine(self, components):
        return sum(v for v in components.values() if v is not None)


class Data:
    def splits(self):
        return {"train": [{"prompt": "p"}]}


class Engine:
    temperature = 1.0

    def generate(self, model, tokenizer, prompts, group_size, generator=None, constraints=None):
        return None


class Metric:
    def __call__(self, predictions, references):
        return {"acc": 1.0}


class Stage:
    def run(self, context):
        return {}


class Tracker:
    def open(self, run_dir):
        pass

    def log(self, step, metrics):
        pass

    def close(self):
        pass


class Judge:
    def probability_yes(self, prompts):
        return [0.25 for _ in prompts]


class Constraint:
    def for_example(self, tokenizer, example):
        return example["rule"]


class Cmd:
    def add_arguments(self, parser):
        parser.add_argument("--x", type=int, default=1)

    def run(self, args):
        return args.x


class Endpoint:
    request_model = dict

    def prepare(self, served, request):
        return "k", request["n"]

    def run_batch(self, served, key, payloads):
        return [{"double": 2 * n} for n in payloads]


COMPONENT_FOR_KIND = {
    "commands": (Cmd, lambda c: c.run(type("A", (), {"x": 3})) == 3),
    "serve_endpoints": (Endpoint, lambda c: c.run_batch(None, *c.prepare(None, {"n": 2})[:1], [2, 5])
                        == [{"double": 4}, {"double": 10}]),
    "item_tokenizers": (Tok, lambda c: c.report()["uniqueness"] == 1.0),
    "teacher_generators": (Teacher, lambda c: c.generate(["a"], 2) == [["trace", "trace"]]),
    "rejection_filters": (Filter, lambda c: c.check({}, "ok").accepted and not c.check({}, "no").accepted),
    "policy_optimizers": (Optim, lambda c: c.keep_group([1.0])),
    "reward_functions": (Reward, lambda c: c([""], ["x"], [{}]) == [{"r": 1.0}]),
    "reward_combiners": (Combiner, lambda c: c.combine({"a": 1.0, "b": None}) == 1.0),
    "datasets": (Data, lambda c: c.splits()["train"][0]["prompt"] == "p"),
    "rollout_engines": (Engine, lambda c: c.generate(None, None, [], 1) is None),
    "metrics": (Metric, lambda c: c([], []) == {"acc": 1.0}),
    "stages": (Stage, lambda c: c.run(None) == {}),
    "trackers": (Tracker, lambda c: c.log(0, {}) is None),
    "judges": (Judge, lambda c: c.probability_yes(["a", "b"]) == [0.25, 0.25]),
    "decoding_constraints": (Constraint, lambda c: c.for_example(None, {"rule": 7}) == 7),
}


def test_every_hook_has_a_test_of_its_own():
    specs = {name[len("register_"):] for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("register_")}
    assert specs == set(KINDS) == set(COMPONENT_FOR_KIND)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_hook_is_documented_as_a_contract(kind):
    doc = inspect.getdoc(getattr(hookspecs, f"register_{kind}"))
    assert doc and "Called once at load time" in doc
    assert KINDS[kind] in doc, f"register_{kind} must name its contract {KINDS[kind]}"
    assert hasattr(contracts, KINDS[kind])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_hook_registers_a_working_component(kind, register_plugin):
    component_class, works = COMPONENT_FOR_KIND[kind]

    class Plugin:
        pass

    def impl(register):
        register("throwaway", lambda params: component_class(), summary="test component")

    impl.__name__ = f"register_{kind}"
    setattr(Plugin, f"register_{kind}", staticmethod(hookimpl(impl)))
    registry = register_plugin(Plugin(), name=f"throwaway-{kind}")
    entry = registry.get(kind, "throwaway")
    assert (entry.plugin, entry.summary) == (f"throwaway-{kind}", "test component")
    assert works(registry.build(kind, "throwaway"))


def test_register_plugin_withdraws_what_it_registered_when_the_test_ends(reasonrl_registry):
    """Drives the fixture by hand: registered during the test, gone after its teardown (the
    registry itself is not reset in between, so only the fixture's own teardown can remove it)."""
    import types

    from reasonrl import testing
    from reasonrl.core import manager

    plugin = types.ModuleType("temporary")
    plugin.register_reward_functions = hookimpl(lambda register: register("temporary_reward", object))
    steps = testing.register_plugin.__wrapped__(reasonrl_registry)
    next(steps)(plugin, name="temporary")
    assert "temporary_reward" in manager.get_registry().names("reward_functions")
    with pytest.raises(StopIteration):
        next(steps)  # the fixture's teardown
    assert "temporary_reward" not in manager.get_registry().names("reward_functions")


def test_docs_list_every_kind():
    readme = (Path(__file__).parents[1] / "docs" / "guides" / "components.md").read_text()
    for kind in KINDS:
        assert f"`{kind}`" in readme, f"docs/guides/components.md must document the kind {kind}"
