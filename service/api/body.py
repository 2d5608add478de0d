"""Reading and decoding webhook bodies defensively: bounded size and time, strict UTF-8 and JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request

from service.api.problems import Problem


async def read_limited(request: Request, *, limit: int, timeout_s: float) -> bytes:
    """The raw body, or a Problem: 413 as soon as it exceeds `limit` (never buffering it all), 408 when too slow."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Problem(400, "bad_request", "Content-Length must be a non-negative integer")
        if int(declared) > limit:
            raise Problem(413, "payload_too_large", f"body of {declared} bytes exceeds the limit of {limit} bytes")

    async def collect() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, "payload_too_large", f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout=timeout_s)
    except TimeoutError:
        raise Problem(408, "request_timeout", f"body not received within {timeout_s:g} s") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(raw: bytes) -> Any:
    """Parse strictly: UTF-8 only, no NUL, no NaN/Infinity, no lone surrogates, bounded nesting."""
    if not raw.strip():
        raise Problem(400, "malformed_json", "body is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, "invalid_utf8", f"body is not valid UTF-8 (byte {exc.start})") from None
    if "\x00" in text or "\\u0000" in text:
        # PostgreSQL text cannot hold NUL; rejecting keeps stored rows byte-identical to what was signed.
        raise Problem(400, "nul_byte", "body contains a NUL character")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise Problem(400, "malformed_json", "JSON is nested too deeply") from None
    except ValueError as exc:
        raise Problem(400, "malformed_json", f"malformed JSON: {exc}") from None
    if "\\ud" in text.lower():
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Problem(400, "invalid_unicode", "JSON contains a lone surrogate escape") from None
        except RecursionError:
            raise Problem(400, "malformed_json", "JSON is nested too deeply") from None
    return value
