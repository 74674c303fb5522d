"""What the Python tests share: the integration harness (a real mount,
unmounted even when a test fails), the module under test (the source
tree's, or an installed one named by ONCEFS_PYTHONPATH), and a mount
fixture."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.environ.get("ONCEFS_PYTHONPATH") or os.path.join(HERE, "..", "..", "tools", "python"))

from harness import Mount, fuse_available  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if not fuse_available():
        skip = pytest.mark.skip(reason="FUSE is not available")
        for item in items:
            item.add_marker(skip)


@pytest.fixture
def mount():
    m = Mount().start()
    try:
        yield m
    finally:
        m.cleanup()
