"""Shared fixtures: a fresh CLI, an isolated cache, and the example third-party plugin ``genkit_ring``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "genkit-ring"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("GENKIT_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache folder for the session: the spoken-digit corpus and reference classifiers are built once."""
    return tmp_path_factory.mktemp("genkit-cache")


@pytest.fixture
def use_shared_cache(shared_cache, monkeypatch):
    """GENKIT_CACHE pointed at the session's shared cache for one test."""
    monkeypatch.setenv("GENKIT_CACHE", str(shared_cache))
    return shared_cache


@pytest.fixture
def ring():
    """The example third-party plugin, registered for the test and removed after it."""
    import genkit_ring
    from genkit.plugins import register_plugin, unregister_plugin

    register_plugin(genkit_ring, name="ring")
    yield genkit_ring
    unregister_plugin("ring")


@pytest.fixture
def invoke(cache):
    """Run the genkit CLI in-process; returns click's Result (stdout and stderr kept apart)."""
    from genkit.cli import create_cli

    def run(*args: str):
        runner = CliRunner()
        return runner.invoke(create_cli(), [str(a) for a in args], catch_exceptions=False)

    return run


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))
