"""The document worker's text: the reference chunker (512-character windows, step 256, the 20-character cut
rule), plain-text decoding, and PDF text through pypdf on PDFs written here by hand."""

from __future__ import annotations

import random

import pytest

from chainloom.infra.text_extract import UnreadableDocument, chunk_text, decode_text, document_text, pdf_text


def pdf_of(*pages: str) -> bytes:
    """A minimal PDF (a line of Helvetica text per page, Latin-1), with a correct cross-reference table."""
    count = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
            f" /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("hello world", ["hello world"]),
        # no space: full windows, 256 apart; the window that reaches the end is the last chunk
        ("x" * 512, ["x" * 512]),
        ("x" * 513, ["x" * 512, "x" * 257]),
        ("x" * 1000, ["x" * 512, "x" * 512, "x" * 488]),
        # the last space is the window's 20th character from the end (index 492): cut after it, no overlap
        ("a" * 492 + " " + "b" * 100, ["a" * 492 + " ", "b" * 100]),
        # 21st from the end (index 491): the whole window, then 256 further on (overlap)
        ("a" * 491 + " " + "b" * 101, ["a" * 491 + " " + "b" * 20, "a" * 235 + " " + "b" * 101]),
        # the window's very last character is a space
        ("a" * 511 + " " + "b" * 10, ["a" * 511 + " ", "b" * 10]),
        # words: the last space of every window is its last character
        ("a " * 300, ["a " * 256, "a " * 44]),
        # the window reaching the end is the last chunk, whatever spaces it holds
        ("a" * 100 + " " + "b" * 411, ["a" * 100 + " " + "b" * 411]),
        # characters are code points, not bytes (3- and 4-byte UTF-8)
        ("€" * 513, ["€" * 512, "€" * 257]),
        ("😀" * 300 + "ü" * 192 + " " + "ß" * 30, ["😀" * 300 + "ü" * 192 + " ", "ß" * 30]),
    ],
    ids=lambda value: f"{len(value)}" if isinstance(value, str) else None,
)
def test_chunks_by_the_reference_rules(text, expected):
    assert chunk_text(text) == expected


def test_chunks_walk_the_text_in_order_and_never_exceed_the_window():
    rng = random.Random(7)
    text = "".join(rng.choice("abcdefgh    ") if rng.random() > 0.05 else "x" * 40 for _ in range(20_000))
    chunks = chunk_text(text)
    start = 0
    for chunk in chunks:
        assert 0 < len(chunk) <= 512 and text[start : start + len(chunk)] == chunk
        cut = len(chunk) < 512 or chunk.endswith(" ") and " " in chunk[-20:]
        start += len(chunk) if cut else 256
    assert start >= len(text) - 256 and text.endswith(chunks[-1])


def test_plain_text_is_decoded_with_its_charset_and_replacement_characters():
    assert decode_text(b"ok \xff\xfe end") == "ok \ufffd\ufffd end"
    assert decode_text("\ufeffmit BOM".encode()) == "mit BOM"
    assert decode_text("\ufeffhé".encode("utf-16-le"), "text/plain; charset=utf-16le") == "hé"
    assert decode_text("\ufeffhé".encode("utf-16-be"), 'text/plain; charset="UTF-16BE"') == "hé"
    assert decode_text("hé".encode(), "text/plain; charset=no-such-charset") == "hé"
    assert decode_text(b"a\x00b") == "ab"


def test_pdf_text_joins_the_pages():
    data = pdf_of("Hello (pdf) world", "second page")
    assert pdf_text(data) == "Hello (pdf) world\nsecond page"
    assert document_text(data, "application/pdf") == "Hello (pdf) world\nsecond page"
    assert document_text("plain".encode(), "text/plain; charset=utf-8") == "plain"


@pytest.mark.parametrize("data", [b"not a pdf", b"%PDF-1.4\n broken", pdf_of("cut short")[:-40]])
def test_an_unreadable_pdf_says_why(data):
    with pytest.raises(UnreadableDocument, match="cannot read the PDF: "):
        pdf_text(data)


def test_other_content_types_have_no_text():
    with pytest.raises(UnreadableDocument, match="no text extraction for content type 'image/png'"):
        document_text(b"\x89PNG", "image/png")
