"""Outer optimizers."""
