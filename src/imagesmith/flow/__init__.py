"""Flows: chained generations and flow-scoped aliases."""
