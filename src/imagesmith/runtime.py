"""The long-lived objects one process shares: settings, database, store, registry, notifier."""

from __future__ import annotations

from dataclasses import dataclass

from imagesmith.config import Settings
from imagesmith.db.engine import Database
from imagesmith.engines.registry import ModelRegistry
from imagesmith.generation.enhance import PromptEnhancer
from imagesmith.generation.events import Notifier
from imagesmith.storage import ObjectStore, open_store


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: ObjectStore
    registry: ModelRegistry
    enhancer: PromptEnhancer
    notifier: Notifier

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        return cls(
            settings=settings,
            db=Database(settings),
            store=open_store(settings),
            registry=ModelRegistry.load(settings.models_file),
            enhancer=PromptEnhancer(
                base_url=settings.llm_base_url,
                model=settings.llm_model,
                api_key=settings.llm_api_key,
                timeout=settings.llm_timeout_seconds,
            ),
            notifier=Notifier(),
        )

    async def close(self) -> None:
        await self.db.dispose()
