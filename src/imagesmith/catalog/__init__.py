"""The model catalogue: what this server can generate and within which bounds. Pure data, no
torch; the core, the dialects and the engines all read it."""
