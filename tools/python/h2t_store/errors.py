"""Exceptions of h2t_store: every one names the store, record, tile, head or example at fault."""

from __future__ import annotations


class H2TStoreError(Exception):
    """Base class of every error this package raises on purpose."""


class StoreFormatError(H2TStoreError):
    """The store, a record or a tile does not match the documented format (or is corrupted)."""


class NotFound(H2TStoreError, LookupError):
    """An unknown feature set, dataset, split, example, task, version or alias."""


class CaptureError(H2TStoreError):
    """A capture cannot proceed (non-tensor or non-finite activation, CLI failure)."""
