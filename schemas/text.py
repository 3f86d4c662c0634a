"""The characters no record's text may carry: the one rule the boundaries and the stream apply alike.

U+0000 is the one that breaks things (PostgreSQL's `text` and `jsonb` refuse it, and a sink that
cannot store a record stops every record behind it); the other C0 control characters are
refused with it because no customer types them and they only ever arrive to confuse a parser or a
terminal downstream. Tab, line feed and carriage return are ordinary text. Lone UTF-16
surrogates (U+D800..U+DFFF) cannot be encoded as UTF-8 at all, so no record could be written.
"""

from __future__ import annotations

import re

__all__ = ["clean_text", "refused_character"]

_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


def refused_character(text: str) -> str | None:
    """The first character `text` may not carry, as `U+XXXX`; None when it is clean."""
    found = _REFUSED.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def clean_text(text: str) -> str:
    """`text` with refused control characters removed and lone surrogates replaced by U+FFFD.

    For free text from sources that cannot be asked again in a clearer way (a received mail): a
    structured body that holds such characters is refused instead, with the reason.
    """
    return _REFUSED.sub(lambda m: "" if m.group() < "\ud800" else "\ufffd", text)
