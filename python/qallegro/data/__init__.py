"""Structures, batches and readers (units: eV, Å, eV/Å, eV/Å³)."""

from qallegro.data.batch import AtomicDataDict, atom_types, collate, edge_vectors, split_batch, type_mapper
from qallegro.data.readers import read, read_ase, read_md17, read_qm9_csv, read_qm9_xyz, read_rmd17
from qallegro.data.splits import random_split
from qallegro.data.structure import DataError, Structure

__all__ = [
    "AtomicDataDict", "DataError", "Structure", "atom_types", "collate", "edge_vectors", "random_split",
    "read", "read_ase", "read_md17", "read_qm9_csv", "read_qm9_xyz", "read_rmd17", "split_batch", "type_mapper",
]
