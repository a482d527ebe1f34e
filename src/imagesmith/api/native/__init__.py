"""The native (Banatie-style) dialect: `/api/v1/...`, `X-API-Key`, `{success, data}`."""
