"""Errors of the reading side that more than one module raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """The config cannot be read or lacks a size the counts need; one line for the user."""
