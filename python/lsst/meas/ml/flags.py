"""Row flags of the output catalogs: one `DescribedFlag` per product.

Each product declares its flags once, as an `enum.IntFlag` whose members
carry their description beside their bit::

    class DiaFlag(DescribedFlag):
        EDGE = 1 << 0, "Stamp reaches past the image edge."

Code tests bits by name (``flags & DiaFlag.EDGE``), never by number, and
the column descriptions and table metadata come from the same declaration.
"""

from __future__ import annotations

import enum

__all__ = ["DescribedFlag"]


class DescribedFlag(enum.IntFlag):
    """An `enum.IntFlag` whose members have a ``description``."""

    description: str

    def __new__(cls, value: int, description: str = "") -> DescribedFlag:
        member = int.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    @property
    def bit(self) -> int:
        """Index of the (single) bit of this member."""
        return int(self).bit_length() - 1

    @classmethod
    def descriptions(cls) -> dict[str, str]:
        """Member name -> description, in bit order."""
        return {m.name: m.description for m in cls}

    @classmethod
    def bits(cls) -> dict[str, int]:
        """Member name -> value, in bit order (for table metadata)."""
        return {m.name: int(m) for m in cls}
