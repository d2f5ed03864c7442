"""The reasonrl core: hook specs, contracts, registry, config and pipeline runner.

Nothing here imports torch or transformers at module level, so listing plugins and
validating configs stays fast.
"""
