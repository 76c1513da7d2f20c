"""Outer objectives."""
