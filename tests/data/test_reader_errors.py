"""Broken extxyz files: the error names the file, the frame index in the file, the atom, line and key."""

from __future__ import annotations

import pytest

import qallegro.data as qd
from qallegro.data import DataError

HEADER = 'Properties=species:S:1:pos:R:3:forces:R:3 energy={e} pbc="F F F"'


def _frame(e: float, rows) -> list:
    return [str(len(rows)), HEADER.format(e=e)] + [" ".join(r) for r in rows]


WATER = [["O", "0.0", "0.0", "0.0", "0.1", "0.0", "0.0"],
         ["H", "0.96", "0.0", "0.0", "0.0", "0.1", "0.0"],
         ["H", "0.0", "0.96", "0.0", "0.0", "0.0", "0.1"]]


def _write(tmp_path, lines, name="bad.extxyz"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ragged_forces_name_frame_atom_line_and_key(tmp_path):
    second = [list(r) for r in WATER]
    second[1] = second[1][:-1]  # one force component missing
    path = _write(tmp_path, _frame(-1.0, WATER) + _frame(-1.1, second))
    with pytest.raises(DataError) as info:
        qd.read(path)
    assert str(info.value) == (f"{path}, frame 1, atom 1 (line 9): 6 columns, expected 7 "
                               "(species:1 pos:3 forces:3); 'forces' is incomplete")


def test_truncated_file_names_the_frame(tmp_path):
    lines = _frame(-1.0, WATER) * 3
    path = _write(tmp_path, lines[:-2])  # the third frame loses two atoms
    with pytest.raises(DataError, match=rf"^{path}, frame 2 \(line 11\): 1 atom lines, expected 3 \(the file is truncated"):
        qd.read(path)


def test_unknown_element_names_frame_atom_and_line(tmp_path):
    bad = [list(r) for r in WATER]
    bad[2][0] = "Xx"
    path = _write(tmp_path, _frame(-1.0, WATER) + _frame(-1.0, WATER) + _frame(-1.1, bad))
    with pytest.raises(DataError, match=rf"^{path}, frame 2, atom 2 \(line 15\): unknown element 'Xx'"):
        qd.read(path)


def test_non_numeric_value_names_the_key(tmp_path):
    bad = [list(r) for r in WATER]
    bad[0][5] = "abc"
    path = _write(tmp_path, _frame(-1.0, bad))
    with pytest.raises(DataError, match=rf"^{path}, frame 0, atom 0 \(line 3\): 'forces' holds 'abc', not a number"):
        qd.read(path)


def test_frame_labels_count_from_the_start_of_the_file(tmp_path):
    # a defect found after reading (NaN force) is reported with the frame's index in the file,
    # not its position in the selection
    bad = [list(r) for r in WATER]
    bad[0][4] = "nan"
    path = _write(tmp_path, _frame(-1.0, WATER) * 4 + _frame(-1.0, bad))
    with pytest.raises(DataError, match=rf"^{path}, frame 4: 'forces' contains NaN"):
        qd.read(path, index="2:")
    with pytest.raises(DataError, match=rf"^{path}, frame 4: 'forces'"):
        qd.read(path, index="0::2")


def test_npz_problems_name_the_file_and_key(tmp_path):
    import numpy as np

    forces = np.empty(2, dtype=object)  # ragged: frames with different atom counts
    forces[0], forces[1] = np.zeros((3, 3)), np.zeros((2, 3))
    ragged = tmp_path / "ragged.npz"
    np.savez(ragged, z=np.array([8, 1, 1]), R=np.zeros((2, 3, 3)), E=np.zeros(2), F=forces)
    with pytest.raises(DataError, match=rf"^{ragged}: key 'F' cannot be read .*ragged arrays are not supported"):
        qd.read(ragged)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=rf"^{junk}: not an npz archive") as info:
        qd.read(junk)
    assert "allow_pickle" not in str(info.value)
