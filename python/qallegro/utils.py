"""Small shared helpers: atomic file writes (a crash never leaves a half-written file), torch files
that carry their own sha256 and are verified on load, and a temporary torch default dtype."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Iterable, List, Optional, Union

from qallegro.errors import CorruptFileError

PathLike = Union[str, os.PathLike]

# mkstemp names: "." + target name + "." + 8 random characters from [a-z0-9_] + ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else by set-and-restore."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Calls ``write(handle)`` on a temporary file in ``path``'s folder, then renames it onto ``path``
    (``os.replace`` is atomic on POSIX). The temporary file is removed if ``write`` raises.

    The file gets the mode an ordinary ``open()`` would give (0o666 minus the umask): mkstemp
    creates 0o600 files, which other users of a shared cluster could not read.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_stale_temp_files(folder: PathLike, names: Optional[Iterable[str]] = None) -> List[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` when a process was killed
    inside a write (``.<name>.XXXXXXXX.tmp``); only for targets in ``names`` when given.

    Call it only where no other process writes into ``folder`` at the same time (a run directory on
    start or resume). Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if names is None else set(names)
    removed = []
    for entry in folder.iterdir():
        if not (entry.is_file() and _TEMP_NAME.match(entry.name)):
            continue
        target = entry.name[1:].rsplit(".", 2)[0]  # ".last.pt.abcd1234.tmp" -> "last.pt"
        if wanted is not None and target not in wanted:
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


# --- torch files with a checksum -------------------------------------------------------------------
# torch.save writes a zip archive and torch.load does not check the members' CRCs, so a flipped bit
# inside a tensor loads silently. The sha256 of the archive goes into the zip's own comment field
# (end-of-central-directory record), so the file stays a valid zip that torch.load, torch.jit.load and
# libtorch read unchanged, and the checksum cannot be separated from the file it protects.
_TAG = b"qallegro-sha256:"
_COMMENT_LEN = len(_TAG) + 64
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22  # without the comment; the comment length is its last 2 bytes


def add_checksum(archive: bytes) -> bytes:
    """A zip ``archive`` without comment -> the same archive whose comment is its sha256."""
    if len(archive) < _EOCD_SIZE or archive[-_EOCD_SIZE:-_EOCD_SIZE + 4] != _EOCD or archive[-2:] != b"\0\0":
        raise ValueError("add_checksum: expected a zip archive without comment (as torch.save writes)")
    comment = _TAG + hashlib.sha256(archive).hexdigest().encode("ascii")
    return archive[:-2] + len(comment).to_bytes(2, "little") + comment


def verify_checksum(data: bytes, source: str) -> bool:
    """True if ``data`` carries a checksum that matches; False if it carries none (files written
    before checksums or by other tools). Raises :class:`CorruptFileError` naming ``source`` on a
    mismatch or a damaged checksum record."""
    start = len(data) - _COMMENT_LEN - _EOCD_SIZE
    tagged = data[-_COMMENT_LEN:].startswith(_TAG)
    record_ok = start >= 0 and data[start:start + 4] == _EOCD
    length_ok = record_ok and int.from_bytes(data[start + _EOCD_SIZE - 2:start + _EOCD_SIZE], "little") == _COMMENT_LEN
    if not (tagged or length_ok):
        return False
    if not (tagged and length_ok):  # one of the two markers is there: a damaged end of file
        raise CorruptFileError(f"{source}: the sha256 record at the end of the file is damaged; the file is corrupt")
    original = data[:start + _EOCD_SIZE - 2] + b"\0\0"
    stored = data[-64:].decode("ascii", errors="replace")
    actual = hashlib.sha256(original).hexdigest()
    if stored != actual:
        raise CorruptFileError(
            f"{source}: sha256 mismatch (stored {stored[:12]}..., content {actual[:12]}...): the file was "
            f"modified or damaged after it was written; use another copy (e.g. best.pt instead of last.pt)"
        )
    return True


def atomic_write_archive(path: PathLike, save: Callable[[IO[bytes]], None]) -> Path:
    """``save(handle)`` writes a zip archive (``torch.save``, ``torch.jit.save``); it goes to ``path``
    atomically with its sha256 in the zip comment."""
    buffer = io.BytesIO()
    save(buffer)
    data = add_checksum(buffer.getvalue())
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, with the archive's sha256 in its zip comment."""
    import torch

    return atomic_write_archive(path, lambda handle: torch.save(obj, handle))


def read_verified(path: PathLike, what: str = "file") -> bytes:
    """The bytes of ``path`` after the checks every qallegro torch file gets: it exists, is not
    empty, and matches its sha256 when it has one. Errors name the file and ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    data = path.read_bytes()
    if not data:
        raise CorruptFileError(f"{path}: empty file, not a {what} (was the write interrupted?)")
    verify_checksum(data, str(path))
    return data


def numpy_safe_globals() -> list:
    """The numpy types ``weights_only`` loading must allow in qallegro files: the array of
    ``np.random.get_state()`` and numpy scalars (HPO samplers propose numpy ints and floats)."""
    import numpy as np

    kinds = (np.bool_, np.int32, np.int64, np.uint32, np.float32, np.float64)
    return [np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0], np.ndarray, np.dtype,
            *(type(np.dtype(k)) for k in kinds)]


def torch_load_bytes(data: bytes, source: str, what: str, map_location: Any = "cpu",
                     weights_only: bool = True, safe_globals: Iterable[Any] = ()) -> Any:
    """``torch.load`` of ``data`` (read by :func:`read_verified`) with every failure turned into
    :class:`CorruptFileError` naming ``source``. ``weights_only`` stays on: ``safe_globals`` lists
    the few non-tensor types the file may hold."""
    import pickle
    import zipfile

    import torch

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise CorruptFileError(f"{source}: not a {what} (not a torch archive: truncated, overwritten or another format)")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, AttributeError,
            ModuleNotFoundError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Weights only" in first:
            # torch's advice here is to turn weights_only off, i.e. to run code from the file: never
            first = "it holds Python objects that a qallegro file does not contain"
        raise CorruptFileError(f"{source}: cannot read it as a {what}: {first}") from exc


@contextlib.contextmanager
def default_dtype(dtype):
    """Sets torch's default dtype inside the ``with`` block and restores the previous one after
    (modules that create parameters/buffers in the default dtype, e.g. e3nn's and nequip's)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
