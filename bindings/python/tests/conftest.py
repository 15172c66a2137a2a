import os
import shutil
import tempfile

import pytest

import latchkey


@pytest.fixture
def url():
    """A host scope of a namespace of its own."""
    directory = tempfile.mkdtemp(prefix="latchkey-py-")
    yield f"host:{directory}"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def scope(url):
    return latchkey.Scope(url)


@pytest.fixture
def cli():
    """The `latchkey` command of this working tree (scripts/test builds it and says where)."""
    path = os.environ.get("LATCHKEY_BIN")
    assert path and os.path.exists(path), (
        "set LATCHKEY_BIN to the latchkey command (cargo build -p latchkey-cli; scripts/test does)"
    )
    return path
