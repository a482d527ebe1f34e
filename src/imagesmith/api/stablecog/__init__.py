"""The Stablecog dialect: `/v1/...`, `Authorization: Bearer <project key>`, bare JSON,
errors as `{error, description?}`."""
