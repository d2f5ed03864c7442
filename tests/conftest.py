import os

import pytest

# Unit tests never touch the user's cache; real-data tests fetch into a shared folder.
os.environ.setdefault("REASONRL_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "reasonrl"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "runs"
