"""Errors of the data tools. All are ValueErrors whose text names the file or topic and what is
wrong, so command lines print them as one line."""

from __future__ import annotations


class DataError(ValueError):
    """Data (a dataset, a message stream) is unusable; the text says why."""


class StampOrderError(DataError):
    """A joint-state stamp goes backwards."""


class BagError(DataError):
    """A bag cannot be read or written; the text names the bag or file."""
