"""File-system primitives shared by the file backends: atomic rewrites and a process lock.

Why these and not plain ``open(path, "w")``: a rewrite that is interrupted (crash,
SIGKILL, full disk) must leave either the old file or the new one, never a truncated mix,
so files are written to a temporary file in the same folder, fsynced, then renamed over
the target (``os.replace`` is atomic on POSIX and Windows). Several processes may write
to one store, so writers hold an exclusive ``flock`` on a lock file beside the data.
"""

from __future__ import annotations

import glob
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import msgspec

from ..errors import ConfigError, StorageError

try:  # POSIX
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None  # type: ignore[assignment]

__all__ = ["FileLock", "atomic_write", "encode_json", "ensure_dir", "fsync_dir", "read_json"]


def ensure_dir(path: Path, url: str) -> Path:
    """Create ``path`` (and parents) or raise ``ConfigError`` saying how to fix it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the store folder {path} for {url}: {exc.strerror or exc}; "
            "choose a writable location (or set DESIC_STORAGE, e.g. sqlite://.desic/desic.db)"
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"the store folder {path} for {url} is not writable; fix its permissions or "
            "choose another location (or set DESIC_STORAGE)"
        )
    return path


def fsync_dir(path: Path) -> None:
    """Persist a rename in ``path`` (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, sync_dir: bool = False) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half.

    The new file keeps the mode of the one it replaces, or gets the mode a new file would
    get (``0666`` less the umask); a target with no write permission at all is refused,
    never replaced (renaming over it would succeed). Temporary files of this target
    (``.<name>.<pid>.<random>.tmp``) left by a process that is gone (killed mid-save) are
    removed. Any failure is a ``StorageError`` naming the path.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    else:
        if not mode & 0o222:
            raise StorageError(
                f"{path} is read-only; it was not changed. Make it writable (chmod u+w) or use another path"
            )
    _remove_orphans(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    if sync_dir:
        fsync_dir(path.parent)


_umask_lock = threading.Lock()


def _umask() -> int:
    """The process's umask (read by setting it and putting it back, under a lock)."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _remove_orphans(path: Path) -> None:
    """Delete ``.<name>.<pid>.*.tmp`` files of ``path`` whose process no longer exists."""
    try:
        leftovers = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return
    for tmp in leftovers:
        pid_text = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or alive(int(pid_text)):
            continue
        tmp.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**22  # a process of another user exists; an absurd pid does not
    return True


def encode_json(value: Any) -> bytes:
    try:
        return msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise StorageError(f"cannot store a record that is not JSON data: {exc}") from exc


def read_json(path: Path, *, what: str = "file") -> Any:
    """Parse a JSON file; a missing file gives ``None``, a corrupt one ``StorageError``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise StorageError(
            f"{what} {path} is corrupt or truncated ({exc}); it was not modified. Restore it "
            "from a backup or move it away to start a new store"
        ) from exc


class FileLock:
    """An inter-process lock (``flock`` on ``path``) that is also a re-entrant thread lock.

    ``flock`` locks belong to an open file description, so the lock file is opened once per
    acquisition depth 0 -> 1; a thread lock in front keeps threads of one process in line
    and makes nested ``with lock:`` blocks in one thread cheap and deadlock-free.
    """

    def __init__(self, path: Path):
        self.path = path
        self._thread_lock = threading.RLock()
        #: held by every locked block; take it alone to keep this process's threads out
        #: while reading without the inter-process lock
        self.thread_lock = self._thread_lock
        self._depth = 0
        self._fh: IO[bytes] | None = None

    @contextmanager
    def __call__(self, *, shared: bool = False) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self._acquire(shared)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self, shared: bool) -> None:
        try:
            fh = open(self.path, "a+b")  # noqa: SIM115 - held open while locked
        except OSError as exc:
            raise StorageError(
                f"cannot open the lock file {self.path}: {exc.strerror or exc}"
            ) from exc
        if _fcntl is not None:
            try:
                _fcntl.flock(fh.fileno(), _fcntl.LOCK_SH if shared else _fcntl.LOCK_EX)
            except OSError as exc:  # pragma: no cover - e.g. a file system without locks
                fh.close()
                raise StorageError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        self._fh = fh

    def _release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            if _fcntl is not None:
                _fcntl.flock(fh.fileno(), _fcntl.LOCK_UN)
            fh.close()
