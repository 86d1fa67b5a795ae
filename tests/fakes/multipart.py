"""A ``multipart/form-data`` body split into its parts, and a request's media type, for the fakes.

aiohttp's part reader parses each part's Content-Disposition again on every ``name`` and ``filename``
lookup, escaping its whole character table each time (about 0.5 ms a part): a fake receiving thousands of
uploads spent more CPU on that than the bot under test spent on the jobs, on the same cores. The clients
that post to the fakes (discord.py, aiohttp's ``FormData``) quote every parameter, which is all this reads.
aiohttp's ``content_type`` runs the standard library's full header parser on every request (more than 1 ms
for a multipart type with its boundary): ``media_type`` only splits the header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_PARAM = re.compile(r';\s*([\w*-]+)="((?:[^"\\]|\\.)*)"')
_BOUNDARY = re.compile(r';\s*boundary=(?:"([^"]+)"|([^\s;]+))', re.IGNORECASE)


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    data: bytes


def media_type(headers: Mapping[str, str]) -> str:
    """``type/subtype`` of a request's or a response's Content-Type, lower case ('' without one)."""
    return headers.get("Content-Type", "").partition(";")[0].strip().lower()


def boundary_of(content_type: str) -> str:
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise ValueError(f"no multipart boundary in {content_type!r}")
    return found[1] or found[2]


def parse_form(body: bytes, content_type: str) -> list[Part]:
    """Every part of ``body``, in order; ``ValueError`` for a body that is not one."""
    delimiter = b"--" + boundary_of(content_type).encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ValueError("not a complete multipart body")
    parts = []
    for chunk in chunks[1:-1]:
        head, sep, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep or not data.endswith(b"\r\n"):
            raise ValueError("a multipart part without its headers or its end")
        params: dict[str, str] = {}
        for line in head.decode("utf-8").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                params = {k.lower(): re.sub(r"\\(.)", r"\1", v) for k, v in _PARAM.findall(value)}
        if "name" not in params:
            raise ValueError("a multipart part without a name")
        parts.append(Part(params["name"], params.get("filename"), data[:-2]))
    return parts
