"""Download one data file from a list of mirrors, verified and written atomically.

Used by :mod:`cuvae.data`; knows nothing about particular datasets. A file is
streamed to a temporary file in the destination folder (``.<name>.part-XXXX``),
the SHA-256 of its *decompressed* payload is checked (gzip or not), the file is
fsynced and only then moved into place with :func:`os.replace`. An interrupted
or failed download therefore never leaves a file under the final name; the
temporary file is removed on every exit path, Ctrl-C included.

Retries: network hiccups (timeouts, resets, 5xx answers, short reads) are
retried ``RETRIES`` times per mirror with exponential backoff; answers that
will not change (404 and other 4xx, DNS failure, connection refused, checksum
mismatch) move on to the next mirror at once.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from cuvae.atomic import fsync_dir
from cuvae.errors import DataError

RETRIES = 3  # tries per mirror for transient failures
BACKOFF_S = 1.0  # sleep before retry k is BACKOFF_S * 2**(k-1)
TIMEOUT_S = 30.0  # connect / read timeout of each request
CHUNK = 1 << 16
USER_AGENT = "cuvae-data/1 (+https://github.com/)"

GZIP_MAGIC = b"\x1f\x8b"


class DownloadError(DataError):
    """Every mirror failed for a file; the message lists each mirror's reason."""


class _Transient(Exception):
    """Worth retrying on the same mirror."""


class _Permanent(Exception):
    """Move on to the next mirror."""


def payload_sha256(path: Path) -> str:
    """SHA-256 of the file's payload: decompressed when it is gzip, else raw.

    Raises ``_Permanent`` when a gzip stream is damaged or cut short.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        is_gz = f.read(2) == GZIP_MAGIC
    try:
        opener = gzip.open if is_gz else open
        with opener(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise _Permanent(f"damaged gzip data ({err or type(err).__name__})") from None
    return h.hexdigest()


def _classify(err: BaseException) -> Exception:
    """Map a urllib / socket error to _Transient or _Permanent with a short reason."""
    if isinstance(err, urllib.error.HTTPError):
        reason = f"HTTP {err.code} {err.reason}"
        return _Transient(reason) if err.code >= 500 or err.code == 429 else _Permanent(reason)
    if isinstance(err, urllib.error.URLError):
        inner = err.reason
        if isinstance(inner, socket.gaierror):
            return _Permanent(f"cannot resolve host ({inner.strerror or inner})")
        if isinstance(inner, ConnectionRefusedError):
            return _Permanent("connection refused")
        if isinstance(inner, (TimeoutError, socket.timeout)):
            return _Transient("timed out")
        if isinstance(inner, OSError):
            return _Transient(inner.strerror or str(inner))
        return _Permanent(str(inner))
    if isinstance(err, (TimeoutError, socket.timeout)):
        return _Transient("timed out")
    if isinstance(err, http.client.IncompleteRead):
        return _Transient(f"connection closed after {len(err.partial):,} bytes")
    if isinstance(err, (ConnectionError, http.client.HTTPException)):
        return _Transient(f"{type(err).__name__}: {err}")
    if isinstance(err, ValueError):  # malformed URL
        return _Permanent(f"bad URL ({err})")
    return _Transient(f"{type(err).__name__}: {err}")


def _make_progress(filename: str, total: int | None):
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    prog = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)
    task = prog.add_task(f"downloading {filename}", total=total)
    return prog, task


def _fetch(url: str, tmp_fd: int, filename: str, progress: bool) -> int:
    """Stream ``url`` into the open temp file; return the byte count."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - classified below
        raise _classify(err) from None
    prog = None
    try:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if progress:
            prog, task = _make_progress(filename, total)
            prog.start()
        got = 0
        while True:
            try:
                block = resp.read(CHUNK)
            except Exception as err:  # noqa: BLE001
                raise _classify(err) from None
            if not block:
                break
            try:
                view = memoryview(block)
                while view:
                    view = view[os.write(tmp_fd, view):]
            except OSError as err:
                raise DataError(f"cannot write the download of {filename}: {err.strerror or err}; "
                                "free some disk space or choose another folder with --data-dir") from None
            got += len(block)
            if prog is not None:
                prog.update(task, completed=got)
        if total is not None and got != total:
            raise _Transient(f"download cut short: got {got:,} of {total:,} bytes")
        return got
    finally:
        if prog is not None:
            prog.stop()
        resp.close()


def download_file(filename: str, bases: list[str], dest_dir: Path, sha256: str, *,
                  progress: bool = True, log=print) -> Path:
    """Download ``filename`` from the first mirror in ``bases`` that serves it intact.

    ``sha256`` is the hash of the decompressed payload. The file is stored as
    ``dest_dir/filename``, or without ``.gz`` if a mirror served it
    uncompressed. Returns the final path; raises :class:`DownloadError` (all
    mirrors failed) or :class:`DataError` (cannot write to ``dest_dir``).
    """
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create data folder {dest_dir}: {err.strerror or err}") from None
    reasons = []
    for base in bases:
        url = base.rstrip("/") + "/" + filename
        for attempt in range(1, RETRIES + 1):
            if not progress:
                log(f"downloading {url}")
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{filename}.part-", dir=dest_dir)
            except OSError as err:
                raise DownloadError(f"cannot write to data folder {dest_dir}: {err.strerror or err}") from None
            tmp = Path(tmp)
            try:
                try:
                    nbytes = _fetch(url, fd, filename, progress)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                got = payload_sha256(tmp)
                if got != sha256:
                    raise _Permanent(f"checksum mismatch (payload SHA-256 {got[:12]}..., "
                                     f"expected {sha256[:12]}...)")
                with open(tmp, "rb") as f:
                    is_gz = f.read(2) == GZIP_MAGIC
                final = dest_dir / (filename if is_gz or not filename.endswith(".gz")
                                    else filename[:-3])
                os.replace(tmp, final)
                fsync_dir(dest_dir)
                if not progress:
                    log(f"downloaded {final} ({nbytes:,} bytes, checksum OK)")
                return final
            except _Transient as err:
                reasons.append(f"{url}: {err}")
                if attempt < RETRIES:
                    time.sleep(BACKOFF_S * 2 ** (attempt - 1))
                    continue
                break
            except _Permanent as err:
                reasons.append(f"{url}: {err}")
                break
            finally:
                try:
                    tmp.unlink()
                except FileNotFoundError:
                    pass
    if not bases:
        reasons.append("no mirrors configured")
    raise DownloadError(f"could not download {filename}: " + "; ".join(reasons))

