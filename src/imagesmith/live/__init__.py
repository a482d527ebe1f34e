"""Live URLs: generate on the first GET of an <img src>, serve from cache after."""
