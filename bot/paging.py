"""Cutting an answer into pages a platform accepts: by UTF-8 bytes, never inside a character, at a line
break where one is near."""

from __future__ import annotations


def split_text(text: str, limit: int) -> list[str]:
    """Split `text` into parts of at most `limit` UTF-8 bytes, never inside a character.

    A part ends at the last line break in its second half when there is one, so paragraphs stay
    whole where they can.
    """
    parts: list[str] = []
    rest = text
    while rest:
        if len(rest.encode("utf-8")) <= limit:
            parts.append(rest)
            break
        size, cut = 0, 0
        for i, ch in enumerate(rest):
            size += len(ch.encode("utf-8"))
            if size > limit:
                cut = i
                break
        newline = rest.rfind("\n", 0, cut)
        if newline >= cut // 2:
            cut = newline + 1
        parts.append(rest[:cut])
        rest = rest[cut:]
    return [p for p in parts if p.strip()] or [text]




def fit_pages(pages: list[str], max_pages: int, note: str, limit: int) -> list[str]:
    """At most `max_pages` pages; when some had to go, the last kept page ends with `note` (and is
    shortened to make room for it within `limit` bytes)."""
    if len(pages) <= max_pages:
        return pages
    last = pages[max_pages - 1]
    while last and len((last + note).encode("utf-8")) > limit:
        last = last[:-20]
    return pages[:max_pages - 1] + [last + note]
