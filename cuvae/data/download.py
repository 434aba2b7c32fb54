"""Download one data file from a list of mirrors, verified and written atomically.

Used by :mod:`cuvae.data`; knows nothing about particular datasets. A file is
streamed to a temporary file in the destination folder (``.<name>.part-XXXX``),
the SHA-256 of its *decompressed* payload is checked (gzip or not), the file is
fsynced and only then moved into place with :func:`os.replace`. An interrupted
or failed download therefore never leaves a file under the final name; the
temporary file is removed on every exit path, Ctrl-C included.

Retries: network hiccups once a mirror has answered (resets, 5xx answers, short
reads, a stalled transfer) are retried ``RETRIES`` times per mirror with
exponential backoff; answers that will not change (404 and other 4xx, DNS
failure, connection refused, checksum mismatch) and a mirror that does not
answer within ``CONNECT_TIMEOUT_S`` move on to the next mirror at once.

Offline: waiting for a first answer is bounded by ``DEADLINE_S`` over all mirrors
(with a line saying so after a second). When no mirror answered at all, the
network is taken to be down for the rest of the process (:func:`network_down`),
so the next file, or the next command in the same process, falls back at once.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from cuvae.atomic import fsync_dir
from cuvae.errors import DataError

RETRIES = 3  # tries per mirror for transient failures (after it answered)
BACKOFF_S = 1.0  # sleep before retry k is BACKOFF_S * 2**(k-1)
CONNECT_TIMEOUT_S = 4.0  # connecting and waiting for the response headers
READ_TIMEOUT_S = 30.0  # one read once the transfer runs
DEADLINE_S = 8.0  # all mirrors together, to decide that the network is unreachable
WAIT_NOTICE_S = 1.0  # silence after which a line says what it is waiting for
CHUNK = 1 << 16
USER_AGENT = "cuvae-data/1 (+https://github.com/)"

GZIP_MAGIC = b"\x1f\x8b"


class DownloadError(DataError):
    """Every mirror failed for a file; the message lists each mirror's reason, ``short`` the gist."""

    def __init__(self, message: str, short: str | None = None):
        super().__init__(message)
        self.short = short or message


_down: dict = {}  # {"reason": ...} once no mirror answered: the network is down for this process


def network_down() -> str | None:
    """Why the network was found unreachable earlier in this process, or None."""
    return _down.get("reason")


def _mark_down(reason: str) -> None:
    _down.setdefault("reason", reason)


def reset_network_state() -> None:
    """Forget an earlier "network down" (tests; a long-lived process that got its network back)."""
    _down.clear()


class _NoAnswer(Exception):
    """The mirror did not answer at all (DNS, refused, no response in time): a sign the network is down."""


class _Waiting:
    """Says once, after a second of silence, that it is waiting and for how long at most."""

    def __init__(self, url: str, limit: float, log):
        self._timer = threading.Timer(WAIT_NOTICE_S, lambda: log(f"waiting for {url.split('/')[2] if '//' in url else url} "
                                                       f"to answer (giving up after {limit:.0f} s)..."))
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()


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


def _open(url: str, timeout: float, log=None):
    """The response to ``url``, or ``_NoAnswer`` / ``_Transient`` / ``_Permanent``."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with _Waiting(url, timeout, log) if log else _nullcontext():
            resp = urllib.request.urlopen(req, timeout=max(0.1, timeout))
    except urllib.error.HTTPError as err:
        raise _classify(err) from None  # it answered: the network is up
    except Exception as err:  # noqa: BLE001 - no answer at all
        raise _NoAnswer(str(_classify(err))) from None
    try:  # the transfer itself may wait longer per read than the first answer
        resp.fp.raw._sock.settimeout(READ_TIMEOUT_S)
    except AttributeError:
        pass
    return resp


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _fetch(url: str, tmp_fd, filename: str, progress: bool, *, resp=None) -> int:
    """Stream ``url`` (or the already opened ``resp``) into the temp file ``tmp_fd`` (an fd, or a callable
    that opens one once the mirror answered); return the byte count."""
    if resp is None:
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": USER_AGENT}),
                                          timeout=CONNECT_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 - classified below
            raise _classify(err) from None
    if callable(tmp_fd):
        try:
            tmp_fd = tmp_fd()
        except BaseException:
            resp.close()
            raise
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
    if network_down():
        raise DownloadError(f"could not download {filename}: the network was unreachable earlier "
                            f"({network_down()})", f"no network ({network_down()})")
    created = _missing_parents(dest_dir)  # made only once a mirror answers; removed again if nothing came
    reasons: list[str] = []
    try:
        return _download(filename, bases, dest_dir, sha256, progress, log, reasons, time.monotonic())
    except _AllSilent:
        pass  # no mirror answered at all: below
    finally:
        _remove_if_empty(created)
    if not bases:
        raise DownloadError(f"could not download {filename}: no mirrors configured", "no mirrors configured")
    gist = f"{_host(bases[0])}: {reasons[0].split(': ', 1)[-1]}"
    _mark_down(gist)  # the next file, and the next load in this process, fall back at once
    raise DownloadError(f"could not download {filename}: " + "; ".join(reasons), f"no network ({gist})")


class _AllSilent(Exception):
    """No mirror answered at all."""


def _host(url: str) -> str:
    return url.split("/")[2] if "//" in url else url


def _missing_parents(folder: Path) -> list[Path]:
    out = []
    while not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def _remove_if_empty(created: list[Path]) -> None:
    for d in created:  # deepest first
        try:
            d.rmdir()
        except OSError:
            return  # not empty (a file arrived) or gone


def _download(filename, bases, dest_dir, sha256, progress, log, reasons, start) -> Path:
    """The mirror loop of :func:`download_file`; raises ``_AllSilent`` when no mirror answered."""
    silent = True
    for base in bases:
        url = base.rstrip("/") + "/" + filename
        for attempt in range(1, RETRIES + 1):
            left = DEADLINE_S - (time.monotonic() - start)
            if silent and left <= 0:
                reasons.append(f"{url}: skipped, no mirror answered within {DEADLINE_S:g} s")
                break
            if not progress:
                log(f"downloading {url}")
            try:
                resp = _open(url, min(CONNECT_TIMEOUT_S, left) if silent else CONNECT_TIMEOUT_S, log)
            except _NoAnswer as err:
                reasons.append(f"{url}: {err}")
                break  # the next mirror: waiting again here would only repeat the silence
            except (_Transient, _Permanent) as err:
                silent = False
                reasons.append(f"{url}: {err}")
                if isinstance(err, _Transient) and attempt < RETRIES:
                    time.sleep(BACKOFF_S * 2 ** (attempt - 1))
                    continue
                break
            silent = False
            tmp = None

            def open_tmp():
                nonlocal tmp
                try:
                    dest_dir.mkdir(parents=True, exist_ok=True)
                    fd, name = tempfile.mkstemp(prefix=f".{filename}.part-", dir=dest_dir)
                except OSError as err:
                    raise DownloadError(f"cannot write to data folder {dest_dir}: {err.strerror or err}; "
                                        "choose another folder with --data-dir") from None
                tmp = Path(name)
                return fd

            fd = None
            try:
                try:
                    fd = open_tmp()
                    nbytes = _fetch(url, fd, filename, progress, resp=resp)
                    os.fsync(fd)
                finally:
                    if fd is not None:
                        os.close(fd)
                    resp.close()
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
                if tmp is not None:
                    try:
                        tmp.unlink()
                    except FileNotFoundError:
                        pass
    if silent:
        raise _AllSilent()
    raise DownloadError(f"could not download {filename}: " + "; ".join(reasons),
                        reasons[0].split(": ", 1)[-1] if reasons else None)

