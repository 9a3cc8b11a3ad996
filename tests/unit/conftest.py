"""Fixtures shared by the unit tests."""

from __future__ import annotations

import numpy as np
import pytest
from twisted.internet.task import Clock

from tests.support import SyncThreads, build_matmul_relu
from twinfer.inference.facade import InferenceFacade
from twinfer.inference.repository import ModelRepository


@pytest.fixture
def world(tmp_path):
    """(root, repository, facade, threads): a started repository holding `tiny` version 1 (identity weights), with
    synchronous threads and a fake clock."""
    root = tmp_path / "repo"
    build_matmul_relu(root / "tiny" / "1" / "model.onnx", np.eye(16))
    threads = SyncThreads()
    repo = ModelRepository(root, Clock(), threads)
    repo.start()
    return root, repo, InferenceFacade(repo), threads
