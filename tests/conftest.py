"""Shared fixtures: the read-only real data in ../shared/data and an isolated PANDERM_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("PANDERM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (read-only in CI: copy before modifying)."""
    path = _shared_data()
    if not path.is_dir():
        pytest.fail(f"shared test data not found at {path}; set PANDERM_SHARED_DATA")
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own PANDERM_HOME so the weights registry never leaks."""
    home = tmp_path_factory.mktemp("panderm_home")
    monkeypatch.setenv("PANDERM_HOME", str(home))
    return home


@pytest.fixture
def cli():
    """Invoke the real ``panderm`` Click app in-process: ``cli(["models"])``."""
    from click.testing import CliRunner

    from panderm_cli.app import build_cli

    def run(args, **kwargs):
        return CliRunner().invoke(build_cli(), args, catch_exceptions=False, **kwargs)

    return run
