"""Remote engines: models that run at a provider (Replicate, OpenAI, Gemini, any
OpenAI-compatible server), each speaking the provider's own HTTP protocol. They run in the
worker process itself (no model child, no torch); worker/remote.py drives them."""

from __future__ import annotations

from imagesmith.engines.remote.base import ProviderConfig, RemoteEngine


def engine_for(provider: str, config: ProviderConfig) -> RemoteEngine:
    from imagesmith.engines.remote.gemini import GeminiEngine
    from imagesmith.engines.remote.openai import OpenAIEngine
    from imagesmith.engines.remote.replicate import ReplicateEngine

    engines: dict[str, type[RemoteEngine]] = {
        "replicate": ReplicateEngine,
        "openai": OpenAIEngine,
        "openai-compatible": OpenAIEngine,
        "gemini": GeminiEngine,
    }
    return engines[provider](config)
