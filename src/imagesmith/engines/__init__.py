"""Engines. Only `registry` may be imported by the API process; the rest run in the model child."""
