"""Gzip for text responses, when the client says it accepts it.

Candidates open their link on phones, often on slow networks: HTML and CSS shrink to about
a quarter. Streamed responses (CSV exports) are left alone so they keep streaming; static
files are read (they are small), compressed once per version and kept in memory.
"""
from __future__ import annotations

import gzip

from flask import Flask, Response, request

COMPRESSIBLE = {"text/html", "text/css", "text/plain", "text/javascript", "application/javascript",
                "application/json", "image/svg+xml"}
MIN_SIZE = 500  # below this, gzip's header and checksum eat most of the saving
MAX_FILE = 1024 * 1024  # a static file larger than this goes out as it is
LEVEL = 6

# Gzipped static files by their strong ETag, which changes whenever the file does.
_gzipped_files: dict[str, bytes] = {}
_MAX_CACHED = 64


def init_compression(app: Flask) -> None:
    """Gzip eligible responses of ``app`` for clients that accept gzip."""
    app.after_request(gzip_response)


def gzip_response(response: Response) -> Response:
    """Return ``response`` gzipped when it is text, big enough and the client accepts gzip."""
    if response.mimetype not in COMPRESSIBLE:
        return response
    # Caches must keep the plain and the gzipped body apart.
    response.vary.add("Accept-Encoding")
    if (request.accept_encodings["gzip"] <= 0
            or response.status_code < 200 or response.status_code in (204, 206, 304)
            or "Content-Encoding" in response.headers
            or "Range" in request.headers):
        return response
    is_file = response.direct_passthrough
    if response.is_streamed and not is_file:
        return response
    if is_file and response.content_length is not None and response.content_length > MAX_FILE:
        return response
    # Reading the body turns a file response into bytes; the file is closed with the response.
    response.direct_passthrough = False
    data = response.get_data()
    if len(data) < MIN_SIZE:
        return response
    etag, weak = response.get_etag()
    key = etag if is_file and etag and not weak else None
    body = _gzipped_files.get(key) if key else None
    if body is None:
        body = gzip.compress(data, compresslevel=LEVEL, mtime=0)
        if key:
            if len(_gzipped_files) >= _MAX_CACHED:
                _gzipped_files.clear()
            _gzipped_files[key] = body
    response.set_data(body)
    response.headers["Content-Encoding"] = "gzip"
    if etag:
        # The gzipped body is another representation: it needs its own validator, and a
        # revalidation that names it is answered 304 here.
        response.set_etag(f"{etag}-gzip", weak=weak)
        if request.method in ("GET", "HEAD"):
            response.make_conditional(request)
    return response
