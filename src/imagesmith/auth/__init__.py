"""API keys, tenancy and request principals."""
