"""Fonts that draw the characters of a figure's text (class names of any script).

matplotlib draws every character of a text in one font family list, falling back glyph by
glyph along it (3.6+), but its default list is DejaVu Sans alone: Chinese or Japanese class
names were empty boxes, with a "Glyph missing" warning per character. matplotlib picks no
fallback from the installed fonts itself, so the installed ones that have the characters are
found here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

# matplotlib's font of placeholder boxes, one for every code point: no fallback
PLACEHOLDER_FONTS = ("Last Resort",)


@functools.cache
def _characters(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):  # a font file FreeType cannot read
        return frozenset()


def families_drawing(texts: Iterable[str]) -> tuple[list[str], str]:
    """The font families to draw `texts` with: matplotlib's default first, then installed
    fonts that have characters of theirs it lacks; and the characters no installed font has
    ("" when none)."""
    from matplotlib import font_manager, rcParams

    families = list(rcParams["font.family"])
    missing = {ord(c) for text in texts for c in text if not c.isspace()}
    for family in families:  # a user's list of fallbacks (matplotlib's way to add fonts)
        try:
            path = font_manager.findfont(
                font_manager.FontProperties(family=[family]), fallback_to_default=False
            )
        except ValueError:  # not installed: matplotlib passes over it
            continue
        missing -= _characters(path)
    for font in font_manager.fontManager.ttflist:
        if not missing:
            break
        if font.name.startswith(PLACEHOLDER_FONTS) or font.name in families:
            continue
        if has := missing & _characters(font.fname):
            families.append(font.name)
            missing -= has
    return families, "".join(chr(c) for c in sorted(missing))
