"""HTTP surfaces only: parse, call one service method, render."""
