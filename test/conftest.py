import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "egs", "dns2020")
sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True, scope="session")
def _threads():
    import torch

    torch.set_num_threads(1)
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests (end-to-end recipe, distributed runs)")
