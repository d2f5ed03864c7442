"""Exceptions shown to users. Their messages name the value, the place and the fix."""


class ReasonRLError(Exception):
    """Base class of every error reasonrl reports without a traceback."""


class StopTraining(Exception):
    """Raised by a training-time check (e.g. a collapse guard among an rl stage's ``metrics``) to
    end the stage early on purpose; ``restore_steps_back`` asks the stage to keep the policy of
    that many steps before, the last one the check accepted."""

    def __init__(self, reason: str, restore_steps_back: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.restore_steps_back = reason, restore_steps_back
