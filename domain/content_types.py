"""What an uploaded file is, told from its first bytes, and which kinds the service keeps.

The type is sniffed from the first 512 bytes with the algorithm of the WHATWG MIME
Sniffing standard as Go's ``net/http.DetectContentType`` implements it (the
reference's): leading whitespace skipped for the HTML and XML signatures, the
signature table tried in order (HTML tags, XML, PDF, PostScript, the UTF-16 and
UTF-8 byte order marks, images, audio and video, fonts, archives, WebAssembly),
then text if no *binary data byte* occurs, else ``application/octet-stream``.
What a client says the type is never counts.

Only ``text/plain`` (with whatever charset the sniffer names), ``application/json``
(which sniffing never produces: allowed for the reference's sake) and
``application/pdf`` are kept; anything else is refused with 422
``content type "<type>" is not allowed``. The stored type keeps its parameters
(``text/plain; charset=utf-8``): a worker leases jobs by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from chainloom.domain.errors import Unprocessable

# How many leading bytes the sniffer looks at.
SNIFF_LENGTH = 512
OCTET_STREAM = "application/octet-stream"
TEXT_UTF8 = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
ALLOWED_MEDIA_TYPES = frozenset({"text/plain", "application/json", "application/pdf"})

_WHITESPACE = frozenset(b"\t\n\x0c\r ")
_TAG_TERMINATING = frozenset(b" >")


@dataclass(frozen=True)
class _Exact:
    """The data starts with ``prefix``."""

    prefix: bytes
    content_type: str

    def match(self, data: bytes, first_non_ws: int) -> str | None:
        return self.content_type if data.startswith(self.prefix) else None


@dataclass(frozen=True)
class _Masked:
    """Each byte of the data, masked, equals the pattern's (whitespace skipped first with ``skip_ws``)."""

    mask: bytes
    pattern: bytes
    content_type: str
    skip_ws: bool = False

    def match(self, data: bytes, first_non_ws: int) -> str | None:
        if self.skip_ws:
            data = data[first_non_ws:]
        if len(data) < len(self.pattern):
            return None
        for byte, mask, expected in zip(data, self.mask, self.pattern):
            if byte & mask != expected:
                return None
        return self.content_type


@dataclass(frozen=True)
class _Html:
    """An HTML tag (case-insensitive) after leading whitespace, followed by a space or ``>``."""

    tag: bytes

    def match(self, data: bytes, first_non_ws: int) -> str | None:
        data = data[first_non_ws:]
        if len(data) < len(self.tag) + 1:
            return None
        for byte, expected in zip(data, self.tag):
            if ord("A") <= expected <= ord("Z"):
                byte &= 0xDF  # upper-case the data's letter
            if byte != expected:
                return None
        return HTML if data[len(self.tag)] in _TAG_TERMINATING else None


class _Mp4:
    """An ISO base media file whose ``ftyp`` box names an ``mp4`` brand."""

    def match(self, data: bytes, first_non_ws: int) -> str | None:
        if len(data) < 12:
            return None
        box_size = int.from_bytes(data[:4], "big")
        if len(data) < box_size or box_size % 4 != 0 or data[4:8] != b"ftyp":
            return None
        for start in range(8, box_size, 4):
            if start == 12:
                continue  # the major brand's version number
            if data[start : start + 3] == b"mp4":
                return "video/mp4"
        return None


def _is_binary_data_byte(byte: int) -> bool:
    """The standard's *binary data byte*: a control character other than TAB, LF, FF, CR and ESC."""
    return byte <= 0x08 or byte == 0x0B or 0x0E <= byte <= 0x1A or 0x1C <= byte <= 0x1F


class _Text:
    """No binary data byte after the leading whitespace: text (charset utf-8, as Go names it)."""

    def match(self, data: bytes, first_non_ws: int) -> str | None:
        if any(_is_binary_data_byte(byte) for byte in data[first_non_ws:]):
            return None
        return TEXT_UTF8


def _riff(kind: bytes, content_type: str) -> _Masked:
    return _Masked(b"\xff\xff\xff\xff\x00\x00\x00\x00" + b"\xff" * len(kind), b"RIFF\x00\x00\x00\x00" + kind, content_type)


_HTML_TAGS = (
    b"<!DOCTYPE HTML", b"<HTML", b"<HEAD", b"<SCRIPT", b"<IFRAME", b"<H1", b"<DIV", b"<FONT", b"<TABLE", b"<A",
    b"<STYLE", b"<TITLE", b"<B", b"<BODY", b"<BR", b"<P", b"<!--",
)  # fmt: skip

# Go's sniffSignatures, in its order (the first that matches wins).
_SIGNATURES: tuple[_Exact | _Masked | _Html | _Mp4 | _Text, ...] = (
    *(_Html(tag) for tag in _HTML_TAGS),
    _Masked(b"\xff\xff\xff\xff\xff", b"<?xml", "text/xml; charset=utf-8", skip_ws=True),
    _Exact(b"%PDF-", "application/pdf"),
    _Exact(b"%!PS-Adobe-", "application/postscript"),
    # Byte order marks.
    _Masked(b"\xff\xff\x00\x00", b"\xfe\xff\x00\x00", "text/plain; charset=utf-16be"),
    _Masked(b"\xff\xff\x00\x00", b"\xff\xfe\x00\x00", "text/plain; charset=utf-16le"),
    _Masked(b"\xff\xff\xff\x00", b"\xef\xbb\xbf\x00", TEXT_UTF8),
    # Images.
    _Exact(b"\x00\x00\x01\x00", "image/x-icon"),
    _Exact(b"\x00\x00\x02\x00", "image/x-icon"),
    _Exact(b"BM", "image/bmp"),
    _Exact(b"GIF87a", "image/gif"),
    _Exact(b"GIF89a", "image/gif"),
    _Masked(b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff", b"RIFF\x00\x00\x00\x00WEBPVP", "image/webp"),
    _Exact(b"\x89PNG\r\n\x1a\n", "image/png"),
    _Exact(b"\xff\xd8\xff", "image/jpeg"),
    # Audio and video.
    _Masked(b"\xff\xff\xff\xff", b".snd", "audio/basic"),
    _Masked(b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff", b"FORM\x00\x00\x00\x00AIFF", "audio/aiff"),
    _Masked(b"\xff\xff\xff", b"ID3", "audio/mpeg"),
    _Masked(b"\xff\xff\xff\xff\xff", b"OggS\x00", "application/ogg"),
    _Masked(b"\xff" * 8, b"MThd\x00\x00\x00\x06", "audio/midi"),
    _riff(b"AVI ", "video/avi"),
    _riff(b"WAVE", "audio/wave"),
    _Mp4(),
    _Exact(b"\x1a\x45\xdf\xa3", "video/webm"),
    # Fonts.
    _Masked(b"\x00" * 34 + b"\xff\xff", b"\x00" * 34 + b"LP", "application/vnd.ms-fontobject"),
    _Exact(b"\x00\x01\x00\x00", "font/ttf"),
    _Exact(b"OTTO", "font/otf"),
    _Exact(b"ttcf", "font/collection"),
    _Exact(b"wOFF", "font/woff"),
    _Exact(b"wOF2", "font/woff2"),
    # Archives.
    _Exact(b"\x1f\x8b\x08", "application/x-gzip"),
    _Exact(b"PK\x03\x04", "application/zip"),
    _Exact(b"Rar!\x1a\x07\x00", "application/x-rar-compressed"),
    _Exact(b"Rar!\x1a\x07\x01\x00", "application/x-rar-compressed"),
    _Exact(b"\x00asm", "application/wasm"),
    _Text(),  # last
)


def sniff(data: bytes) -> str:
    """The content type of content starting with ``data`` (only its first 512 bytes are looked at)."""
    data = data[:SNIFF_LENGTH]
    first_non_ws = 0
    while first_non_ws < len(data) and data[first_non_ws] in _WHITESPACE:
        first_non_ws += 1
    for signature in _SIGNATURES:
        found = signature.match(data, first_non_ws)
        if found:
            return found
    return OCTET_STREAM


def media_type(content_type: str) -> str:
    """``text/plain; charset=utf-8`` → ``text/plain`` (lower-cased, parameters dropped)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_allowed(content_type: str) -> bool:
    return media_type(content_type) in ALLOWED_MEDIA_TYPES


def ensure_allowed(content_type: str) -> None:
    """Refuse (422) a type the service does not keep."""
    if not is_allowed(content_type):
        raise Unprocessable(f'content type "{content_type}" is not allowed', param="file")
