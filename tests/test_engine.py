"""The diffusers engine in-process (the test process may import torch; the API never does)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from imagesmith.catalog.models import ModelRegistry
from imagesmith.catalog.params import EngineParams
from imagesmith.engines.base import EngineConfig, EngineJob


def job(model_id: str, seed: int = 1) -> EngineJob:
    params = EngineParams(model_id, 64, 64, 2, 7.5, "K_EULER", seed)
    return EngineJob("g", "a red circle", None, params)


def test_loaded_models_stay_within_the_memory_budget(models_dir: Path) -> None:
    from imagesmith.engines.diffusers_engine import DiffusersEngine, pipeline_bytes

    tiny = ModelRegistry.load().get("tiny-sd")
    twin = replace(tiny, id="tiny-twin")
    config = EngineConfig(str(models_dir), "cpu", False, [tiny.to_dict(), twin.to_dict()])
    engine = DiffusersEngine(config)
    first = engine.pipeline("tiny-sd")
    size = pipeline_bytes(first)
    assert size > 1_000_000  # ~4 MB of fp32 weights
    engine.memory_budget = int(size * 1.5)  # room for one model, not two
    engine.generate([job("tiny-twin")], lambda *_: None, lambda: False)
    assert list(engine._loaded) == ["tiny-twin"]
    engine.memory_budget = size * 3
    engine.generate([job("tiny-sd")], lambda *_: None, lambda: False)
    assert list(engine._loaded) == ["tiny-twin", "tiny-sd"]


def test_unknown_model_is_a_clear_failure(models_dir: Path) -> None:
    from imagesmith.engines.base import ModelUnavailable
    from imagesmith.engines.diffusers_engine import DiffusersEngine

    engine = DiffusersEngine(EngineConfig(str(models_dir), "cpu", False, []))
    with pytest.raises(ModelUnavailable, match="not in this worker's registry"):
        engine.generate([job("nope")], lambda *_: None, lambda: False)
