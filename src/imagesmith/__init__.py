"""imagesmith: a self-hosted, multi-tenant image-generation API server."""

__version__ = "0.1.0"
