"""A FUSE file system that forgets what was not fsynced when the power is "cut".

Like Jepsen's LazyFS, much smaller. Passthrough to a backing directory, with a
page cache of its own in between:

* ``write``/``truncate`` go to a per-file cache of dirty 4 KiB pages (and a
  pending size); ``read`` sees the backing file with the cache laid over it,
  so every process sees its writes at once, as with the kernel's page cache;
* ``fsync``/``fdatasync`` of a file write that file's dirty pages and size to
  the backing file (what reached the disk);
* writing ``cut`` to ``/.powercut`` (a control file at the root) throws every
  unflushed page and size change away: the power failed. ``cut torn SEED``
  first writes a random half of the dirty pages (seeded), as a disk does that
  had started writing back on its own: a torn write, in any order.

The model of a real ext4 (``data=ordered``) power cut, and where it is kinder
or harsher:

* File data not fsynced is lost, in whole pages (or torn, see above). Harsher
  than ext4, which writes dirty pages back within ~30 s anyway.
* Namespace operations (create, unlink, rename, mkdir) are durable at once.
  ext4 journals them and commits the journal at the next fsync of any file
  and every 5 s; SQLite fsyncs the directory after creating a WAL or journal,
  so for SQLite the two agree, except that a WAL unlinked at close is gone
  here even if the cut came right after (SQLite handles both).
* The ``-shm`` file is mmapped by SQLite; it is never fsynced, so a cut
  discards it (the first connection after a crash rebuilds it, as it must).

Run: ``python lazyfs.py BACKING_DIR MOUNTPOINT`` (foreground; unmount with
``fusermount3 -u MOUNTPOINT``). Single-threaded, so operations are ordered:
a request a killed process left in flight is handled before a ``cut``
written after that process was reaped.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import sys
from typing import Any

import mfusepy as fuse

PAGE = 4096
CONTROL = "/.powercut"


class _Cache:
    """Unflushed state of one file: dirty pages and, after a truncate or an
    extension, the size the file will have once flushed."""

    def __init__(self, backing_size: int) -> None:
        self.pages: dict[int, bytearray] = {}
        self.size = backing_size
        # Backing bytes at or beyond this offset are stale (truncated away).
        self.floor = backing_size


class LazyFS(fuse.Operations):
    use_ns = True

    def __init__(self, root: str) -> None:
        self.root = root
        self.caches: dict[str, _Cache] = {}
        self.cuts = 0

    # --- helpers ------------------------------------------------------------------

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _cache(self, path: str) -> _Cache:
        cache = self.caches.get(path)
        if cache is None:
            cache = self.caches[path] = _Cache(os.stat(self._real(path)).st_size)
        return cache

    def _page(self, path: str, cache: _Cache, index: int) -> bytearray:
        page = cache.pages.get(index)
        if page is None:
            page = cache.pages[index] = bytearray(self._view(path, cache, index * PAGE, PAGE))
            page.extend(b"\0" * (PAGE - len(page)))
        return page

    def _view(self, path: str, cache: _Cache | None, offset: int, size: int) -> bytes:
        """What a reader sees: backing bytes (below the truncation floor),
        zeros up to the pending size, dirty pages on top."""
        if cache is None:
            with open(self._real(path), "rb") as f:
                f.seek(offset)
                return f.read(size)
        end = min(offset + size, cache.size)
        if end <= offset:
            return b""
        with open(self._real(path), "rb") as f:
            f.seek(offset)
            data = bytearray(f.read(max(0, min(end, cache.floor) - offset)))
        data.extend(b"\0" * (end - offset - len(data)))
        for index in range(offset // PAGE, (end - 1) // PAGE + 1):
            page = cache.pages.get(index)
            if page is None:
                continue
            start = max(offset, index * PAGE)
            stop = min(end, (index + 1) * PAGE)
            data[start - offset:stop - offset] = page[start - index * PAGE:stop - index * PAGE]
        return bytes(data)

    def _flush(self, path: str, cache: _Cache, keep: set[int] | None = None) -> None:
        """Write the dirty pages (all, or only ``keep``) and the size to the backing file."""
        with open(self._real(path), "r+b") as f:
            if keep is None:
                f.truncate(min(cache.floor, cache.size))
            for index, page in sorted(cache.pages.items()):
                if keep is not None and index not in keep:
                    continue
                f.seek(index * PAGE)
                f.write(page[: max(0, min(PAGE, cache.size - index * PAGE))])
            if keep is None:
                f.truncate(cache.size)
            f.flush()
            os.fsync(f.fileno())

    def _cut(self, torn_seed: int | None) -> None:
        if torn_seed is not None:
            rng = random.Random(torn_seed)
            for path, cache in list(self.caches.items()):
                keep = {i for i in cache.pages if rng.random() < 0.5}
                if keep and os.path.exists(self._real(path)):
                    self._flush(path, cache, keep)
        self.caches.clear()
        self.cuts += 1

    # --- file system operations ---------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == CONTROL:
            return {"st_mode": 0o100600, "st_nlink": 1, "st_size": 0}
        st = os.lstat(self._real(path))
        attrs = {k: getattr(st, k) for k in (
            "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns",
            "st_mtime_ns", "st_ctime_ns")}
        for k in ("st_atime", "st_mtime", "st_ctime"):
            attrs[k] = attrs.pop(k + "_ns")
        cache = self.caches.get(path)
        if cache is not None:
            attrs["st_size"] = cache.size
        return attrs

    def init_with_config(self, conn_info: Any, config_3: Any) -> None:
        # No attribute or name caching in the kernel: after a cut, sizes shrink.
        if config_3 is not None:
            config_3.attr_timeout = 0
            config_3.entry_timeout = 0
            config_3.negative_timeout = 0

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def access(self, path: str, amode: int) -> int:
        if path != CONTROL and not os.access(self._real(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.root)
        return {k: getattr(st, k) for k in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
            "f_favail", "f_flag", "f_namemax")}

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._real(path), uid, gid)
        return 0

    def utimens(self, path: str, times: Any = None) -> int:
        os.utime(self._real(path), ns=times)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._real(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._real(path))
        return 0

    def unlink(self, path: str) -> int:
        os.unlink(self._real(path))
        self.caches.pop(path, None)
        return 0

    def rename(self, old: str, new: str) -> int:
        os.rename(self._real(old), self._real(new))
        self.caches.pop(new, None)
        if old in self.caches:
            self.caches[new] = self.caches.pop(old)
        return 0

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        fd = os.open(self._real(path), os.O_WRONLY | os.O_CREAT, mode)
        os.close(fd)
        return 0

    def open(self, path: str, flags: int) -> int:
        if path == CONTROL:
            return 0
        if flags & os.O_TRUNC:
            self.truncate(path, 0)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self._view(path, self.caches.get(path), offset, size)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if path == CONTROL:
            words = data.decode().split()
            if words[:1] == ["cut"]:
                self._cut(int(words[2]) if words[1:2] == ["torn"] else None)
                return len(data)
            raise fuse.FuseOSError(errno.EINVAL)
        cache = self._cache(path)
        pos = 0
        while pos < len(data):
            index, start = divmod(offset + pos, PAGE)
            n = min(PAGE - start, len(data) - pos)
            self._page(path, cache, index)[start:start + n] = data[pos:pos + n]
            pos += n
        cache.size = max(cache.size, offset + len(data))
        return len(data)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if path == CONTROL:
            return 0
        cache = self._cache(path)
        if length < cache.size:
            for index in [i for i in cache.pages if i * PAGE >= length]:
                del cache.pages[index]
            if length % PAGE:  # the bytes past the end of the last page are gone too
                page = self._page(path, cache, length // PAGE)
                page[length % PAGE:] = b"\0" * (PAGE - length % PAGE)
            cache.floor = min(cache.floor, length)
        cache.size = length
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        cache = self.caches.pop(path, None)
        if cache is not None:
            self._flush(path, cache)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0  # namespace operations are durable at once (see the module docstring)

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() is not a sync

    def release(self, path: str, fh: int) -> int:
        return 0


def main() -> None:
    backing, mountpoint = sys.argv[1:3]
    logging.basicConfig(level=logging.WARNING)
    fuse.FUSE(LazyFS(os.path.abspath(backing)), mountpoint, foreground=True, nothreads=True,
              fsname="lazyfs", default_permissions=True)


if __name__ == "__main__":
    main()
