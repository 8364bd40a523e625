"""``cvm demo``: the main job (grows with each capability)."""

from __future__ import annotations


def demo() -> None:
    """Launch a VM in each mode, attack it from the host, and show what held."""
