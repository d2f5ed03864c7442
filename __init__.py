"""reasonrl: post-train LLMs to reason for ranking and classification with RL."""

from reasonrl.core.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
