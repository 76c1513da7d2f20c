"""Reproductions of the source papers' methods as reusable functions."""
