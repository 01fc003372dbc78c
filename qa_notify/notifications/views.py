"""Placeholder until the pages land."""

from . import bp  # noqa: F401
