"""What the document worker reads out of a file: its text, cut into the chunks ``POST /index`` takes.

The chunker is the reference worker's (platform notes §9 step 4), on Unicode code points (Python
``str`` indices, as the reference's Python worker counts them; a byte never splits a character):

- A window of ``WINDOW`` (512) characters starts at the text's beginning.
- If the window reaches the end of the text, it is the last chunk (whatever its length, whatever
  spaces it holds): the text is done. So a text of at most 512 characters is one chunk, and no chunk
  lies wholly inside the one before it (stepping on from a window that already reached the end
  would only repeat its tail).
- Otherwise, if the window's last space (U+0020 only, as the reference) is one of its last
  ``CUT_WITHIN`` (20) characters — at index 492 … 511 of a full window —, the chunk ends just after
  that space (the space is its last character) and the next window starts right after it: no overlap.
- Otherwise the whole window is the chunk and the next one starts ``STEP`` (256) characters later: a
  256-character overlap.

Nothing is stripped: the chunks of the no-overlap case join up to the text. An empty text has no
chunk. (The worker leaves out chunks that are only whitespace: nothing to search for in them.)

Plain text is decoded with the charset its content type names (sniffing names ``utf-8``,
``utf-16be`` or ``utf-16le``; an unknown one is read as UTF-8), undecodable bytes becoming U+FFFD,
a leading byte-order mark dropped. A PDF's text is pypdf's text of each page, the pages joined with
a line break. NUL characters are dropped from both (PostgreSQL keeps no NUL in text or JSON).
"""

from __future__ import annotations

import codecs
import io

from pypdf import PasswordType, PdfReader
from pypdf.errors import PyPdfError

WINDOW = 512
STEP = 256
CUT_WITHIN = 20

PLAIN_TEXT = "text/plain"
PDF = "application/pdf"


class UnreadableDocument(ValueError):
    """The file's bytes hold no text this worker can read (a broken or encrypted PDF, say)."""


def chunk_text(text: str, window: int = WINDOW, step: int = STEP, cut_within: int = CUT_WITHIN) -> list[str]:
    """The chunks of ``text`` by the rules of the module docstring."""
    if window < 1 or not 1 <= step <= window or not 0 <= cut_within <= window:
        raise ValueError("need window >= 1, 1 <= step <= window and 0 <= cut_within <= window")
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = start + window
        if end >= len(text):
            chunks.append(text[start:])
            break
        piece = text[start:end]
        space = piece.rfind(" ")
        if space >= 0 and window - space <= cut_within:
            chunks.append(piece[: space + 1])
            start += space + 1
        else:
            chunks.append(piece)
            start += step
    return chunks


def media_type(content_type: str) -> str:
    """``text/plain; charset=utf-8`` → ``text/plain`` (lower-cased)."""
    return content_type.split(";", 1)[0].strip().lower()


def charset_of(content_type: str) -> str:
    """The ``charset`` parameter of a content type (lower-cased, unquoted); ``utf-8`` when it names none."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"').lower()
    return "utf-8"


def decode_text(data: bytes, content_type: str = "text/plain; charset=utf-8") -> str:
    """The text of a plain-text file: decoded with its charset (UTF-8 when unknown), U+FFFD for bytes that
    do not decode, without a leading byte-order mark or NUL characters."""
    charset = charset_of(content_type)
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    text = data.decode(charset, errors="replace")
    return text.removeprefix("\ufeff").replace("\x00", "")


def pdf_text(data: bytes) -> str:
    """The text of a PDF: each page's text (pypdf), joined with line breaks. A PDF encrypted with a user
    password is opened with the empty one if it can be; a PDF pypdf cannot read is ``UnreadableDocument``."""
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise UnreadableDocument("cannot read the PDF: it is encrypted with a password")
        pages = [page.extract_text() for page in reader.pages]
    except UnreadableDocument:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as error:
        # pypdf reports a malformed file as its own errors, and some as plain ones from deep inside.
        raise UnreadableDocument(f"cannot read the PDF: {type(error).__name__}: {error}") from error
    return "\n".join(pages).replace("\x00", "")


def document_text(data: bytes, content_type: str) -> str:
    """The text of a file of ``content_type`` (plain text or PDF); another type is ``UnreadableDocument``."""
    kind = media_type(content_type)
    if kind == PDF:
        return pdf_text(data)
    if kind == PLAIN_TEXT:
        return decode_text(data, content_type)
    raise UnreadableDocument(f"no text extraction for content type {content_type!r}")
