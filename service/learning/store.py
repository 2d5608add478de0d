"""Adapter files as one archive: packed deterministically, stored by SHA-256 (in the database or a configured
directory), fetched and verified by that hash, unpacked into a local cache a worker reuses across restarts.

No shared filesystem is needed: a worker in another pod asks the database for the archive of the version the registry
names. A directory store (`ITSM_LEARNING__STORE_DIR`, e.g. a mounted bucket) keeps large adapters out of the
database; the hash in the registry row is still what is trusted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.db import session_scope
from service.domain.learning import Adapter, AdapterBlob
from service.settings import Settings

log = structlog.get_logger(__name__)

COMPLETE = ".complete"  # written last into a cache directory: its presence means the unpacking finished
MAX_UNPACKED_BYTES = 8 << 30  # a sane bound on what one archive may unpack to (a 70B LoRA is well below it)


class StoreError(RuntimeError):
    """An adapter archive that is missing, altered or unusable."""


@dataclass(frozen=True)
class Stored:
    """Where an archive went: its hash, size and the storage kind (db | dir)."""

    sha256: str
    size_bytes: int
    storage: str


def pack(directory: Path) -> bytes:
    """The directory's regular files as a tar.gz; the same files give the same bytes (sorted, no times or owners)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise StoreError(f"{directory}: no files to store")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            info = tarfile.TarInfo(path.relative_to(directory).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


def digest(data: bytes) -> str:
    """SHA-256 hex of an archive."""
    return hashlib.sha256(data).hexdigest()


def put(session: Session, settings: Settings, data: bytes) -> Stored:
    """Store an archive (idempotent by hash) in the configured store; in the caller's transaction for the database."""
    sha = digest(data)
    target = settings.learning.store_dir
    if target is not None:
        path = Path(target) / f"{sha}.tar.gz"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as tmp:
                tmp.write(data)
            os.replace(tmp.name, path)
        return Stored(sha, len(data), "dir")
    if session.get(AdapterBlob, sha) is None:
        session.add(AdapterBlob(sha256=sha, data=data, size_bytes=len(data)))
        session.flush()
    return Stored(sha, len(data), "db")


def fetch(engine: Engine, settings: Settings, adapter: Adapter) -> bytes:
    """An adapter's archive, verified against the registry's hash."""
    if adapter.storage == "dir":
        if settings.learning.store_dir is None:
            raise StoreError(f"{adapter.version} is in a directory store, but ITSM_LEARNING__STORE_DIR is not set")
        path = Path(settings.learning.store_dir) / f"{adapter.sha256}.tar.gz"
        if not path.exists():
            raise StoreError(f"{adapter.version}: {path} is missing from the adapter store")
        data = path.read_bytes()
    else:
        with session_scope(engine) as session:
            blob = session.get(AdapterBlob, adapter.sha256)
            if blob is None:
                raise StoreError(f"{adapter.version}: its files ({adapter.sha256[:12]}) are not in the database")
            data = bytes(blob.data)
    if digest(data) != adapter.sha256:
        raise StoreError(f"{adapter.version}: the stored files do not match their hash {adapter.sha256[:12]}…")
    return data


def unpack(data: bytes, target: Path) -> None:
    """Unpack an archive into `target` (which must not exist): regular files only, nothing outside it."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        if any(not m.isfile() for m in members):
            raise StoreError("an adapter archive holds only regular files")
        if sum(m.size for m in members) > MAX_UNPACKED_BYTES:
            raise StoreError("an adapter archive unpacks to more than the allowed size")
        tar.extractall(target, filter="data")  # the data filter refuses absolute paths, '..' and links


def materialize(engine: Engine, settings: Settings, adapter: Adapter, *, keep: int = 4) -> Path:
    """The adapter's files in the local cache (`<cache>/<sha256>/`), fetched and unpacked once; other processes may
    race to do the same (the first complete directory wins). Keeps the `keep` most recently used."""
    cache = cache_dir(settings)
    final = cache / adapter.sha256
    if (final / COMPLETE).exists():
        os.utime(final)  # most recently used: pruned last
        return final
    data = fetch(engine, settings, adapter)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{adapter.sha256[:12]}-", dir=cache))
    try:
        unpack(data, tmp / "files")
        (tmp / "files" / COMPLETE).write_text(adapter.sha256 + "\n")
        try:
            os.replace(tmp / "files", final)
        except OSError:
            if not (final / COMPLETE).exists():  # a half-written directory from a killed process: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp / "files", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("adapter_cached", version=adapter.version, sha256=adapter.sha256[:12], bytes=len(data))
    prune(cache, keep=keep)
    return final


def cache_dir(settings: Settings) -> Path:
    """Where this process keeps unpacked adapters."""
    return Path(settings.learning.cache_dir or Path(settings.var_dir) / "adapters")


def prune(cache: Path, *, keep: int) -> list[Path]:
    """Remove cached adapters beyond the `keep` most recently used (never one touched in the last minute)."""
    dirs = sorted((d for d in cache.iterdir() if d.is_dir() and not d.name.startswith(".")), key=_mtime, reverse=True)
    gone = [d for d in dirs[keep:] if time.time() - _mtime(d) > 60]
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
