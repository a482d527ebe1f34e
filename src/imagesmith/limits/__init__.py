"""Rate limits (and later quotas, plans and credits)."""
