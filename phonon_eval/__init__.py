"""Phonon and thermal-conductivity evaluation of machine-learned interatomic potentials."""

__version__ = "0.1.0"

from phonon_eval.checkpoint import CheckpointError, convert, load_potential, save_potential
from phonon_eval.graph import Graph, StructureError, build_graph
from phonon_eval.nequix import Nequix, NequixConfig
from phonon_eval.potential import (
    Potential,
    UnknownElementError,
    energy_forces_stress,
    hessian,
    hessian_vector_product,
    total_energy,
)

__all__ = [
    "__version__",
    "CheckpointError",
    "Graph",
    "Nequix",
    "NequixConfig",
    "Potential",
    "StructureError",
    "UnknownElementError",
    "build_graph",
    "convert",
    "energy_forces_stress",
    "hessian",
    "hessian_vector_product",
    "load_potential",
    "save_potential",
    "total_energy",
]
