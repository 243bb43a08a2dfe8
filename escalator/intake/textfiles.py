"""Decoding the text files schools export (registers, the guardian roster): UTF-8 or GBK.

One rule for every CSV escalator reads, so a file that one reader takes the other takes too.
"""

from __future__ import annotations

import codecs


class UndecodableText(ValueError):
    """The bytes are not text in any encoding tried; ``str()`` says why (never the bytes)."""


def decode_text(data: bytes, encoding: str | None = None, *,
                hint: str = "save the file as UTF-8 or GBK, or declare the encoding"
                ) -> tuple[str, str]:
    """Decode ``data``. Returns ``(text, encoding used)``; a byte-order mark is removed.

    ``encoding`` declared: used strictly (``gbk``/``gb2312`` are read as ``gb18030``, their
    superset; ``utf-8`` tolerates a byte-order mark). Otherwise: a UTF-8 or UTF-16 byte-order
    mark decides; else strict UTF-8; else strict GB18030 (what Excel on a Chinese Windows PC
    saves). Never replaces characters. Raises :class:`UndecodableText` naming the byte offset
    (and ``hint``, what the user can do), an unknown encoding, or NUL characters.
    """
    if encoding:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise UndecodableText(f"unknown encoding {encoding!r}") from None
        if name in {"gbk", "gb2312"}:
            name = "gb18030"
        if name == "utf-8":
            name = "utf-8-sig"
        candidates = [name]
    elif data.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    else:
        candidates = ["utf-8", "gb18030"]
    first_error: UnicodeDecodeError | None = None
    for name in candidates:
        try:
            text = data.decode(name)
        except UnicodeDecodeError as e:
            first_error = first_error or e
            continue
        except (LookupError, ValueError) as e:
            raise UndecodableText(f"cannot decode as {name}: {e}") from None
        if "\x00" in text:
            raise UndecodableText("the file holds NUL characters: not a text CSV (UTF-16 "
                                  "without a byte-order mark?)")
        return text.removeprefix("\ufeff"), name
    assert first_error is not None
    tried = " or ".join("GBK (GB18030)" if n == "gb18030" else n.upper() for n in candidates)
    raise UndecodableText(f"not {tried} text: undecodable byte at offset {first_error.start}; "
                          f"{hint}")
