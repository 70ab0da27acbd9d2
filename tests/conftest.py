import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    from prefdistill.tiny import make_tiny_assets

    return make_tiny_assets(tmp_path_factory.mktemp("tiny_assets"))
