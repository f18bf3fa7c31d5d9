"""Phonon and thermal-conductivity evaluation of machine-learned interatomic potentials."""

__version__ = "0.1.0"

from phonon_eval.checkpoint import CheckpointError, convert, load_potential, save_potential
from phonon_eval.datasets import Dataset, DatasetError
from phonon_eval.force_constants import analytic_force_constants, finite_force_constants, force_constants
from phonon_eval.graph import Graph, StructureError, build_graph
from phonon_eval.nequix import Nequix, NequixConfig
from phonon_eval.phonons import PhononSettings, evaluate_material
from phonon_eval.potential import (
    Potential,
    UnknownElementError,
    batched_forces,
    energy_forces_stress,
    hessian,
    hessian_columns,
    hessian_vector_product,
    total_energy,
)
from phonon_eval.records import Record, RecordError, read_record, write_record
from phonon_eval.symmetry import ColumnSet, SupercellSymmetry, SymmetryError, symmetrize_translational

__all__ = [
    "__version__",
    "CheckpointError",
    "ColumnSet",
    "Dataset",
    "DatasetError",
    "Graph",
    "Nequix",
    "NequixConfig",
    "PhononSettings",
    "Potential",
    "Record",
    "RecordError",
    "StructureError",
    "SupercellSymmetry",
    "SymmetryError",
    "UnknownElementError",
    "analytic_force_constants",
    "batched_forces",
    "build_graph",
    "convert",
    "energy_forces_stress",
    "evaluate_material",
    "finite_force_constants",
    "force_constants",
    "hessian",
    "hessian_columns",
    "hessian_vector_product",
    "load_potential",
    "read_record",
    "save_potential",
    "symmetrize_translational",
    "total_energy",
    "write_record",
]
