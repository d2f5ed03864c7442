"""A third-party reward plugin: ``brevity`` = 1 - len(completion) / max_chars (floored at -1)."""

from pydantic import BaseModel, Field

from reasonrl import hookimpl


class BrevityParams(BaseModel):
    max_chars: int = Field(100, description="completions up to this many characters get the full reward")


class Brevity:
    def __init__(self, params: BrevityParams):
        self.max_chars = params.max_chars

    def __call__(self, prompts, completions, examples):
        return [{"brevity": max(-1.0, 1 - len(c) / self.max_chars)} for c in completions]


@hookimpl
def register_reward_functions(register):
    register("brevity", Brevity, params=BrevityParams, summary="1 - length / max_chars: prefer short answers")
