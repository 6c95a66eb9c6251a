"""Exceptions gradvet raises for misuse (subclasses of ValueError, so they are easy to catch)."""


class GradvetUsageError(ValueError):
    """A gradvet object was used in a way it does not support; the message says how to fix it."""
