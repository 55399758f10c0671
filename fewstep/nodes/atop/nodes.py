"""Node classes of this pack (filled in as the pack grows)."""

from __future__ import annotations

NODES: tuple[type, ...] = ()
