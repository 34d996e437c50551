"""Append-only extxyz output with resume bookkeeping.

Each labelled frame is rendered to text first and appended with one ``write`` + ``fsync``, so the file
only ever grows by whole frames. If a run is killed mid-write anyway, ``scan_frames`` finds the last
complete frame and ``ExtxyzStore`` truncates the torn tail before appending again. Frames whose
calculation failed go to a JSON-lines side log (``<output>.failed.jsonl``) and never into the data.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np
from ase import Atoms

# A frame's identity in a generated file: the sampler (config_type) and its index within that sampler.
FrameKey = Tuple[str, int]
_KEY_RE = {k: re.compile(rf'(?:^|\s){k}=("?)([^"\s]+)\1') for k in ("config_type", "frame_index")}


def _frame_key(comment: str, path: Path, frame: int) -> Optional[FrameKey]:
    found = {k: r.search(comment) for k, r in _KEY_RE.items()}
    if found["config_type"] is None or found["frame_index"] is None:
        return None
    try:
        return found["config_type"].group(2), int(found["frame_index"].group(2))
    except ValueError as err:
        raise ValueError(f"{path}: frame {frame} has a non-integer frame_index") from err


def scan_frames(path: Path) -> Tuple[List[Optional[FrameKey]], int]:
    """Keys of the complete extxyz frames in ``path`` and the byte offset where they end.

    A frame is complete when its atom-count line, comment line and all atom lines are present and
    newline-terminated. Frames without ``config_type``/``frame_index`` (not written by the generator)
    get key None.
    """
    keys: List[Optional[FrameKey]] = []
    end = 0
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        head = data[pos:nl].strip()
        if not head:  # tolerate blank lines between frames
            pos = nl + 1
            end = pos
            continue
        try:
            n_atoms = int(head)
        except ValueError as err:
            raise ValueError(f"{path}: byte {pos}: expected an atom count line, found {head[:40]!r}") from err
        comment_end = data.find(b"\n", nl + 1)
        if comment_end < 0:
            break
        cursor = comment_end + 1
        complete = True
        for _ in range(n_atoms):
            line_end = data.find(b"\n", cursor)
            if line_end < 0:
                complete = False
                break
            cursor = line_end + 1
        if not complete:
            break
        keys.append(_frame_key(data[nl + 1:comment_end].decode(), path, len(keys)))
        pos = end = cursor
    return keys, end


def frame_text(atoms: Atoms) -> str:
    """One extxyz frame (energy, forces, stress from ``atoms.calc`` plus ``atoms.info``) as text."""
    import ase.io

    buffer = io.StringIO()
    ase.io.write(buffer, atoms, format="extxyz")
    return buffer.getvalue()


def read_failed(failed_path: os.PathLike | str) -> Set[FrameKey]:
    """Keys of the frames recorded in a ``<output>.failed.jsonl`` log (empty if there is none).

    A torn last line (a kill mid-write) is ignored, so its frame is tried again; any other line that is
    not a failure record raises ValueError naming the file and line.
    """
    failed: Set[FrameKey] = set()
    failed_path = Path(failed_path)
    if not failed_path.exists():
        return failed
    with open(failed_path) as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                failed.add((str(rec["config_type"]), int(rec["frame_index"])))
            except (json.JSONDecodeError, KeyError) as err:
                if line.endswith("\n"):
                    raise ValueError(f"{failed_path}: line {i + 1} is not a failure record") from err
    return failed


class ExtxyzStore:
    """The output file of a generation run and its failed-frame log.

    path: the extxyz file (created if missing). On opening, a torn last frame is cut off.
    ``done`` holds the keys of frames already written; ``failed`` those already recorded as failed.
    """

    def __init__(self, path: os.PathLike | str) -> None:
        self.path = Path(path)
        self.failed_path = self.path.with_name(self.path.name + ".failed.jsonl")
        self.done: Set[FrameKey] = set()
        self.failed: Set[FrameKey] = read_failed(self.failed_path)
        self.truncated_bytes = 0
        if self.path.exists():
            keys, end = scan_frames(self.path)
            size = self.path.stat().st_size
            if end < size:
                # A frame torn by a kill mid-write: drop it, it is recomputed.
                self.truncated_bytes = size - end
                with open(self.path, "r+b") as fh:
                    fh.truncate(end)
            self.done = {k for k in keys if k is not None}

    def _append(self, path: Path, text: str) -> None:
        payload = text.encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, atoms: Atoms) -> None:
        """Append one labelled frame (its info must carry config_type and frame_index)."""
        key = (str(atoms.info["config_type"]), int(atoms.info["frame_index"]))
        self._append(self.path, frame_text(atoms))
        self.done.add(key)

    def record_failure(self, key: FrameKey, error: BaseException, atoms: Optional[Atoms],
                       wall_time: float, extra: Optional[Dict[str, Any]] = None) -> None:
        """Log a frame whose calculation failed (with its structure, for inspection)."""
        rec: Dict[str, Any] = {
            "config_type": key[0], "frame_index": key[1], "error": type(error).__name__,
            "message": str(error)[:2000], "wall_time": round(wall_time, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if atoms is not None:
            rec.update(symbols=atoms.get_chemical_symbols(), positions=np.round(atoms.positions, 6).tolist(),
                       cell=np.round(atoms.cell.array, 6).tolist(), pbc=atoms.pbc.tolist())
        rec.update(extra or {})
        self._append(self.failed_path, json.dumps(rec) + "\n")
        self.failed.add(key)


def check_settings(path: Path, settings: Dict[str, Any], force: bool = False) -> None:
    """Refuse to resume ``path`` with settings other than those that made it.

    The settings live in ``<output>.generate.json`` (written atomically). Frame counts may change
    between runs (frames are addressed per sampler, so more frames extend a data set); any other
    difference would mix different candidate streams under the same frame keys and raises ValueError
    naming the key, unless ``force``.
    """
    sidecar = path.with_name(path.name + ".generate.json")
    if sidecar.exists() and not force:
        old = json.loads(sidecar.read_text())
        for key in sorted(set(old) | set(settings)):
            if key == "counts":
                continue
            if old.get(key) != settings.get(key):
                raise ValueError(f"{path} was generated with {key}={old.get(key)!r}, not {settings.get(key)!r}; "
                                 f"use another output file, or --force to resume anyway")
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, sidecar)
