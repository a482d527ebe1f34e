"""The devkit4ai dialect (Generation V2): `/api/v1/generation/...`, `/api/v1/auth/...`,
`/api/v1/projects/...`; end users with JWTs and project-scoped headers; FastAPI's `{detail}`."""
