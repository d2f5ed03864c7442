"""Exceptions shown to users. Their messages name the value, the place and the fix."""


class ReasonRLError(Exception):
    """Base class of every error reasonrl reports without a traceback."""
