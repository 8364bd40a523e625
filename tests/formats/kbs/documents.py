"""Edit one member of a nested JSON document for a test: set it, or remove it (``None``)."""

from __future__ import annotations

from typing import Any


def edit(document: dict[str, Any], keys: list[str], value: object) -> dict[str, Any]:
    """``document`` with the member at ``keys`` set to ``value`` (removed when None)."""
    node = document
    *parents, last = keys
    for parent in parents:
        node = node[parent]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return document
