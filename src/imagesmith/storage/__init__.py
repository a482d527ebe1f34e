"""Object store interface and adapters."""

from imagesmith.storage.base import ObjectStore, StoredObject, open_store

__all__ = ["ObjectStore", "StoredObject", "open_store"]
