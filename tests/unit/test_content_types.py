"""Content sniffing as Go's net/http.DetectContentType does it (the WHATWG algorithm), and which types are kept."""

from __future__ import annotations

import pytest

from chainloom.domain.content_types import ensure_allowed, is_allowed, media_type, sniff
from chainloom.domain.errors import Unprocessable

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"


@pytest.mark.parametrize(
    "data, expected",
    [
        # Text: no binary data byte after the leading whitespace (ESC is allowed, VT is not); any 8-bit text.
        (b"", TEXT),
        (b"Hello, world\n", TEXT),
        (b'{"a": 1}', TEXT),  # JSON is never sniffed as such
        (b"caf\xe9 \xc3\xa9", TEXT),
        (b"colour \x1b[31mred", TEXT),
        (b"abc\x0bdef", "application/octet-stream"),
        (b"\x00\x01\x02\x03", "application/octet-stream"),
        (b"a" * 512 + b"\x00", TEXT),  # only the first 512 bytes count
        # HTML: a tag after whitespace, any case, then a space or '>'.
        (b"  \n<!DOCTYPE html><html>", HTML),
        (b"<HtMl>", HTML),
        (b"<a href='x'>", HTML),
        (b"<p>", HTML),
        (b"<!-- note -->", HTML),
        (b"<abc>", TEXT),  # "<A" not followed by a space or '>'
        (b"<br", TEXT),  # nothing after the tag
        (b"\t<?xml version='1.0'?>", "text/xml; charset=utf-8"),
        # Exact prefixes (no whitespace skipped).
        (b"%PDF-1.7\n", "application/pdf"),
        (b" %PDF-1.7", TEXT),
        (b"%!PS-Adobe-3.0", "application/postscript"),
        # Byte order marks (four bytes needed, as in Go).
        (b"\xfe\xff\x00h\x00i", "text/plain; charset=utf-16be"),
        (b"\xff\xfeh\x00i\x00", "text/plain; charset=utf-16le"),
        (b"\xef\xbb\xbfhello", TEXT),
        (b"\xfe\xff", TEXT),  # too short for the mark: high bytes are no binary data bytes
        # Images, audio and video, fonts, archives.
        (b"GIF89a\x01\x00", "image/gif"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"BMxxxx", "image/bmp"),
        (b"\x00\x00\x01\x00\x01\x00", "image/x-icon"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "audio/wave"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", "video/avi"),
        (b"ID3\x03\x00", "audio/mpeg"),
        (b"OggS\x00\x02", "application/ogg"),
        (b"MThd\x00\x00\x00\x06\x00\x01", "audio/midi"),
        (b"FORM\x00\x00\x00\x10AIFFCOMM", "audio/aiff"),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42", "video/mp4"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isomavc1", "application/octet-stream"),
        (b"\x1a\x45\xdf\xa3\x01", "video/webm"),
        (b"\x00\x01\x00\x00\x00\x10", "font/ttf"),
        (b"wOF2\x00\x01", "font/woff2"),
        (b"\x00" * 34 + b"LP", "application/vnd.ms-fontobject"),
        (b"\x1f\x8b\x08\x00", "application/x-gzip"),
        (b"PK\x03\x04\x14\x00", "application/zip"),
        (b"Rar!\x1a\x07\x01\x00", "application/x-rar-compressed"),
        (b"\x00asm\x01\x00\x00\x00", "application/wasm"),
    ],
)
def test_sniffing_follows_the_whatwg_table(data: bytes, expected: str):
    assert sniff(data) == expected


def test_only_text_json_and_pdf_are_kept_with_their_parameters():
    for kept in (TEXT, "text/plain; charset=utf-16le", "application/json", "Application/PDF"):
        assert is_allowed(kept)
        ensure_allowed(kept)
    assert media_type("Text/Plain ; charset=utf-8") == "text/plain"
    for refused in (HTML, "image/png", "application/octet-stream", "text/xml; charset=utf-8"):
        with pytest.raises(Unprocessable, match=f'content type "{refused}" is not allowed'):
            ensure_allowed(refused)
