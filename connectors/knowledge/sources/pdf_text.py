"""Text out of a PDF file with pypdf, page by page; a PDF without a text layer is an error."""

from __future__ import annotations

import io
import logging

from connectors.knowledge.sources.base import BadContent, check_text

__all__ = ["pdf_to_text"]


def pdf_to_text(data: bytes, max_pages: int = 500) -> tuple[str | None, str]:
    """(the title in the PDF's metadata if any, the text of its pages separated by blank lines)."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    # pypdf logs every repaired cross-reference table; a broken file is reported once, by the caller
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise BadContent("the PDF is encrypted")
        if len(reader.pages) > max_pages:
            raise BadContent(f"the PDF has {len(reader.pages)} pages, more than {max_pages}")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        title = reader.metadata.title if reader.metadata is not None else None
    except BadContent:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise BadContent(f"not a readable PDF ({type(exc).__name__}: {exc})") from None
    text = "\n\n".join(page for page in pages if page)
    if not text:
        raise BadContent("the PDF has no text layer (a scan?)")
    return (str(title).strip() or None) if title else None, check_text(text)
