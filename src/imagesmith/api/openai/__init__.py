"""The OpenAI Images dialect: `/v1/images/...` and `/v1/models`, `Authorization: Bearer <project
key>`, OpenAI's response and error shapes, so the official `openai` SDK works unchanged."""
