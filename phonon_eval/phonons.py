"""The phonon evaluator: one record in, model and DFT phonon properties side by side out.

Per material (MDR benchmark protocol, Loew et al. 2025): relax the unit cell with the model,
build phonopy with the record's supercell and primitive matrices, get force constants from the
model, and compute with phonopy exactly what is computed for the DFT force constants with
identical settings: ω_max over the commensurate q-points (and over the mesh), S, F and C_V on a
mesh over a temperature grid, the band structure along one q-path shared by both sides, the
total DOS on one frequency grid, and the lowest frequency.

The model is anything `provider.as_provider` takes (a checkpoint, a `Potential`, an ASE
calculator, a `ForceProvider`): force constants are exact from HVPs where the model has them and
phonopy's finite displacements otherwise. `evaluate_material` is a plain function of (model,
record, settings), so that it runs the same serially or on any worker.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, ClassVar

import numpy as np
import phonopy
from phonopy.harmonic.dynmat_to_fc import get_commensurate_points
import seekpath

from phonon_eval.force_constants import METHODS, force_constants, resolve_method
from phonon_eval.provenance import ProtocolSettings
from phonon_eval.provider import ForceProvider, ModelLike, as_provider
from phonon_eval.records import FC_SYMMETRIZATIONS, Record, phonopy_from_ase
from phonon_eval.relax import relax
from phonon_eval.units import THZ_TO_K

__all__ = ["PHONON_PROTOCOLS", "PhononSettings", "THZ_TO_K", "band_path", "compare", "evaluate_material", "model_phonopy", "phonon_properties"]


# h·1 THz / k_B in K: MDR's instability threshold for the acoustic modes at Γ is -35 K
_MDR_GAMMA_TOLERANCE = 35.0 / THZ_TO_K


PHONON_PROTOCOLS: dict[str, dict[str, Any]] = {
    # The MDR phonon benchmark's reference workflow (Loew et al. 2025; the public benchmark
    # scripts): FIRE + FrechetCellFilter + FixSymmetry to half of 0.005 eV/Å (15 rounds of 500
    # steps), 0.01 Å displacements not restricted to axes, drift removed, force constants
    # symmetrised, no NAC, phonopy's default mesh (length 100), its temperatures, and its
    # stability rule (acoustic modes at Γ above -35 K, every other mode real).
    "mdr": {},
    # This project's own best: the model's exact force constants from symmetry-reduced HVPs (no
    # finite-difference error; the symfc projection leaves an exact Hessian as it is and makes a
    # reference from DFT forces as phonopy.load does), every commensurate q-point, otherwise mdr.
    "exact": {"fc_method": "auto", "fc_symmetrization": "symfc", "commensurate_points": "primitive"},
}
"""Named, versioned phonon protocols (version 1): the fields that differ from the defaults."""
PHONON_PROTOCOL_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PhononSettings(ProtocolSettings):
    """Everything that decides the numbers; recorded in the results' attributes.

    The defaults are the `mdr` protocol; `PhononSettings.from_protocol(name, **changes)` starts
    from another one. `overrides` is filled in: the fields that differ from the protocol named.

    Attributes:
        protocol: the named protocol these settings start from (`PHONON_PROTOCOLS`).
        relax: relax the unit cell with the model first.
        relax_cell: relax the cell as well as the positions.
        fmax: force threshold of the relaxation, eV/Å.
        relax_steps: step budget of the relaxation.
        relax_symprec: tolerance of FixSymmetry during the relaxation, Å.
        fc_method: "analytic" (symmetry-reduced HVPs), "finite" (phonopy displacements), or
            "auto": analytic where the model has HVPs (JAX models), finite otherwise.
        displacement: finite-displacement amplitude, Å.
        diagonal_displacements: let phonopy displace along non-Cartesian directions too
            (phonopy's is_diagonal; MDR: False).
        remove_drift: subtract the mean force from every displaced supercell (MDR), the
            model's and those of a reference made from DFT forces.
        fc_symmetrization: how every force-constant set the evaluation makes is symmetrised,
            the model's (finite or analytic) and a reference made from DFT forces alike:
            "phonopy" (one pass of phonopy's symmetrisation, as the MDR scripts), "symfc" (the
            symfc projector, as `phonopy.load`) or "none". Stored reference force constants
            are used as their author made them (MDR's by the MDR pipeline).
        nac: give both sides the record's Born charges (non-analytic correction); MDR: no.
        commensurate_points: the q-points of ω_max and of the mode errors: "supercell_matrix"
            (as the MDR scripts: `get_commensurate_points(supercell_matrix)` taken in the
            primitive reciprocal basis, which are the supercell's commensurate points only where
            the primitive cell is the unit cell) or "primitive" (the supercell's commensurate
            points in the primitive basis, all of them).
        mesh: q-point mesh for thermal properties, ω_max over the mesh and the DOS: three
            integers, or a float length in Å as phonopy takes it (MDR: phonopy's default 100).
        temperatures: temperature grid, K (300 K is where the metrics are taken).
        band_points: q-points per band-path segment (phonopy's const-interval sampling).
        dos_pitch: frequency step of the DOS grid, THz.
        stability_tolerance: a frequency below -tolerance (THz) anywhere on the mesh, the
            commensurate points or the band path, the acoustic modes at Γ excepted, marks an
            instability (MDR: 0).
        gamma_tolerance: how far below zero the three acoustic modes at Γ may go, THz (MDR: 35 K).
        overrides: (set by the class) the fields that differ from the protocol.
    """

    protocol: str = "mdr"
    relax: bool = True
    relax_cell: bool = True
    fmax: float = 0.0025
    relax_steps: int = 7500
    relax_symprec: float = 0.01
    fc_method: str = "finite"
    displacement: float = 0.01
    diagonal_displacements: bool = False
    remove_drift: bool = True
    fc_symmetrization: str = "phonopy"
    nac: bool = False
    commensurate_points: str = "supercell_matrix"
    mesh: tuple[int, int, int] | float = 100.0
    temperatures: tuple[float, ...] = (0.0, 75.0, 150.0, 300.0, 600.0)
    band_points: int = 51
    dos_pitch: float = 0.1
    stability_tolerance: float = 0.0
    gamma_tolerance: float = _MDR_GAMMA_TOLERANCE
    overrides: tuple[str, ...] = ()

    PROTOCOLS: ClassVar[dict[str, dict[str, Any]]] = PHONON_PROTOCOLS
    PROTOCOL_VERSION: ClassVar[int] = PHONON_PROTOCOL_VERSION
    COMMAND: ClassVar[str] = "phonons"

    def __post_init__(self) -> None:
        self._record_overrides()
        if self.fc_symmetrization not in FC_SYMMETRIZATIONS:
            raise ValueError(f"fc_symmetrization must be one of {', '.join(FC_SYMMETRIZATIONS)}, got {self.fc_symmetrization!r}")
        if self.commensurate_points not in ("supercell_matrix", "primitive"):
            raise ValueError(f"commensurate_points must be supercell_matrix or primitive, got {self.commensurate_points!r}")
        if self.fc_method not in METHODS:
            raise ValueError(f"fc_method must be one of {', '.join(METHODS)}, got {self.fc_method!r}")
        if 300.0 not in self.temperatures:
            raise ValueError("temperatures must include 300 K, where the metrics are taken")
        if isinstance(self.mesh, (int, float)) and not isinstance(self.mesh, bool):
            if self.mesh <= 0:
                raise ValueError(f"a mesh length must be positive, got {self.mesh}")
        elif len(self.mesh) != 3 or min(self.mesh) < 1:
            raise ValueError(f"mesh must be three positive integers or a length, got {self.mesh}")

    def method_for(self, provider: ForceProvider) -> str:
        """The force-constant method these settings use for `provider` ("auto" resolved).

        Raises:
            ProviderError: "analytic" for a model without Hessian-vector products.
        """
        return resolve_method(provider, self.fc_method)




def band_path(phonon: phonopy.Phonopy, points: int) -> tuple[list[np.ndarray], list[str], list[bool]]:
    """Seekpath's standard q-path of phonopy's primitive cell, in that cell's reduced coordinates.

    Seekpath standardises the cell it is given (it may permute, rotate or re-choose the axes), so
    its `get_path` coordinates belong to its own cell, and phonopy's `get_band_qpoints_by_seekpath`
    passes them on as if they were phonopy's: right only when the record is in the standard
    setting. `get_path_orig_cell` maps the points back to the cell phonopy uses. Sampling is
    phonopy's const-interval one: the longest segment gets `points` q-points, the others as many
    at the same spacing (at least the two ends).

    Returns:
        (q-points per segment, end labels in phonopy's LaTeX form, whether each segment
        continues into the next): what `Phonopy.run_band_structure` takes.
    """
    primitive = phonon.primitive
    found = seekpath.get_path_orig_cell(primitive.totuple(), symprec=phonon.symmetry.tolerance)
    ends = [(np.asarray(found["point_coords"][a]), np.asarray(found["point_coords"][b])) for a, b in found["path"]]
    reciprocal = np.linalg.inv(primitive.cell)  # columns: reciprocal vectors without the 2π
    lengths = [np.linalg.norm(reciprocal @ (b - a)) for a, b in ends]
    counts = [max(2, int(np.rint(length / max(lengths) * points))) for length in lengths]
    qpoints = [a + np.outer(np.linspace(0.0, 1.0, n), b - a) for (a, b), n in zip(ends, counts)]
    pairs = found["path"]
    connections = [pairs[i][1] == pairs[i + 1][0] for i in range(len(pairs) - 1)] + [False]
    labels = []
    for i, (start, end) in enumerate(pairs):
        labels += [start, end] if i == 0 or not connections[i - 1] else [end]
    return qpoints, [_latex(label) for label in labels], connections


def _latex(label: str) -> str:
    """Seekpath's point name ('GAMMA', 'X', 'SIGMA_0') as phonopy writes it on a plot."""
    for greek in ("GAMMA", "SIGMA", "DELTA", "LAMBDA"):
        if greek in label:
            return "$" + label.replace(greek, "\\" + greek.capitalize()) + "$"
    return "$\\mathrm{%s}$" % label


def _commensurate_points(phonon: phonopy.Phonopy, convention: str = "primitive") -> np.ndarray:
    """Commensurate q-points in the primitive reciprocal basis, Γ first (see PhononSettings)."""
    if convention == "supercell_matrix":
        return get_commensurate_points(phonon.supercell_matrix)
    smat = np.linalg.inv(phonon.primitive_matrix) @ phonon.supercell_matrix
    return get_commensurate_points(np.rint(smat).astype(int))


def phonon_properties(
    phonon: phonopy.Phonopy,
    settings: PhononSettings,
    path: tuple[list[np.ndarray], list[str], list[bool]],
) -> dict[str, Any]:
    """Everything phonopy gives for force constants already set on `phonon`.

    Returns:
        dict of omega_max (commensurate, THz), omega_max_mesh, min_frequency (THz: the lowest
        over the mesh, the commensurate points and the band path, the three acoustic modes at
        Γ excepted, so that Γ and the zone boundary count, which a shifted mesh never samples),
        gamma_acoustic (THz: the lowest acoustic frequency at Γ), the frequencies at the
        commensurate points (Γ first), temperature-resolved entropy (J/K/mol), free_energy
        (kJ/mol), heat_capacity (J/K/mol), band distances (1/Å) and frequencies (P, n_bands) in
        THz, and the mesh frequencies.
    """
    points = _commensurate_points(phonon, settings.commensurate_points)
    phonon.run_qpoints(points)
    commensurate = phonon.qpoints.frequencies
    _run_mesh(phonon, settings)
    mesh = phonon.mesh
    with warnings.catch_warnings():
        # phonopy 4 notes the near-zero acoustic modes at Γ of a Γ-centred mesh in the sums;
        # MDR's stored values include them, and so does this (their share is ~1e-5 eV)
        warnings.filterwarnings("ignore", message=".*acoustic mode.*at Gamma")
        phonon.run_thermal_properties(temperatures=np.asarray(settings.temperatures))
    tp = phonon.thermal_properties
    qpoints, labels, connections = path
    phonon.run_band_structure(qpoints, path_connections=connections, labels=labels)
    bands = phonon.band_structure
    path_frequencies = np.concatenate(bands.frequencies)
    path_points = np.concatenate(qpoints)
    everywhere = [(points, commensurate), (path_points, path_frequencies), (np.asarray(mesh.qpoints), np.asarray(mesh.frequencies))]
    at_gamma = [np.all(np.abs(q - np.rint(q)) < 1e-8, axis=1) for q, _ in everywhere]
    gamma = [f[g, :3] for (_, f), g in zip(everywhere, at_gamma)]
    rest = [np.concatenate([f[~g].ravel(), f[g, 3:].ravel()]) for (_, f), g in zip(everywhere, at_gamma)]
    return {
        "omega_max": float(commensurate.max()),
        "omega_max_mesh": float(mesh.frequencies.max()),
        "min_frequency": float(np.concatenate(rest).min()),
        "gamma_acoustic": float(np.concatenate([g.ravel() for g in gamma]).min()),
        "commensurate_frequencies": np.asarray(commensurate, dtype=float),
        "entropy": np.asarray(tp.entropy, dtype=float),
        "free_energy": np.asarray(tp.free_energy, dtype=float),
        "heat_capacity": np.asarray(tp.heat_capacity, dtype=float),
        "band_distance": np.concatenate(bands.distances),
        "band_frequency": path_frequencies,
        "mesh_frequencies": np.asarray(mesh.frequencies),
        "mesh_weights": np.asarray(mesh.weights),
    }


def _run_mesh(phonon: phonopy.Phonopy, settings: PhononSettings) -> None:
    with warnings.catch_warnings():
        # phonopy's default shifted even mesh drops point-group reduction and says so; the
        # numbers are the same, only slower, and MDR's reference values use this mesh
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mesh = settings.mesh if isinstance(settings.mesh, (int, float)) else list(settings.mesh)
        phonon.run_mesh(mesh, with_eigenvectors=False, is_mesh_symmetry=True)


def _dos(phonon: phonopy.Phonopy, grid: np.ndarray, settings: PhononSettings) -> np.ndarray:
    _run_mesh(phonon, settings)
    phonon.run_total_dos(freq_min=grid[0], freq_max=grid[-1], freq_pitch=settings.dos_pitch)
    dos = phonon.total_dos
    return np.interp(grid, dos.frequency_points, dos.dos)


def _path_labels(path: tuple[list[np.ndarray], list[str], list[bool]]) -> tuple[np.ndarray, np.ndarray]:
    """Per path point: its segment index and its high-symmetry label ('' between the ends)."""
    qpoints, labels, connections = path
    segment = np.concatenate([np.full(len(q), i) for i, q in enumerate(qpoints)])
    names = [""] * len(segment)
    start, k = 0, 0
    for i, q in enumerate(qpoints):
        names[start] = labels[k]
        names[start + len(q) - 1] = labels[k + 1]
        # connected segments share their end label with the next start; a break starts a new pair
        k += 1 if connections[i] else 2
        start += len(q)
    return segment, np.asarray(names, dtype=object)


def model_phonopy(
    provider: ForceProvider, record: Record, settings: PhononSettings = PhononSettings()
) -> tuple[phonopy.Phonopy, dict[str, Any]]:
    """Relax the record's unit cell with the model and set the model's force constants.

    Returns:
        phonopy with the record's supercell and primitive matrices (and its NAC parameters, as
        the reference has them), and facts about how it was made.
    """
    t0 = time.perf_counter()
    provider.check_elements(record.unitcell.numbers)  # fail early, naming the unknown element
    unitcell, steps = record.unitcell, 0
    if settings.relax:
        relaxed = relax(
            provider, unitcell, fmax=settings.fmax, steps=settings.relax_steps,
            symprec=settings.relax_symprec, relax_cell=settings.relax_cell,
        )
        if not relaxed.converged:
            raise RuntimeError(
                f"relaxation not converged: fmax {relaxed.fmax:.4f} eV/Å after {relaxed.steps} steps"
            )
        unitcell, steps = relaxed.atoms, relaxed.steps
    t1 = time.perf_counter()
    model = phonopy.Phonopy(
        phonopy_from_ase(unitcell),
        supercell_matrix=record.supercell_matrix,
        primitive_matrix=record.phonopy_primitive_matrix,
    )
    model.nac_params = record.nac_params  # `compare` applies the protocol's NAC to both sides
    method, n = force_constants(
        provider, model, settings.fc_method, distance=settings.displacement,
        diagonal=settings.diagonal_displacements, remove_drift=settings.remove_drift,
        symmetrization=settings.fc_symmetrization,
    )
    info = {
        "fc_method": method,
        "volume": float(unitcell.get_volume()),
        "relax_steps": steps,
        "n_fc_evaluations": n,
        "time_relax": t1 - t0,
        "time_fc": time.perf_counter() - t1,
    }
    return model, info


def compare(
    model: phonopy.Phonopy, reference: phonopy.Phonopy, record: Record, settings: PhononSettings = PhononSettings()
) -> dict[str, Any]:
    """Phonon properties of two phonopy objects with force constants, side by side, as a result row.

    Both get the protocol's NAC setting first (in place). The band path is the reference
    primitive cell's, used in reduced coordinates for both.
    """
    t0 = time.perf_counter()
    for phonon in (model, reference):
        if not settings.nac:
            phonon.nac_params = None
    path = band_path(reference, settings.band_points)
    ours = phonon_properties(model, settings, path)
    ref = phonon_properties(reference, settings, path)
    top = max(ours["omega_max_mesh"], ref["omega_max_mesh"])
    bottom = min(ours["min_frequency"], ref["min_frequency"], ours["gamma_acoustic"], ref["gamma_acoustic"], 0.0)
    grid = np.arange(np.floor(bottom) - 1.0, top * 1.05 + 1.0, settings.dos_pitch)
    segment, labels = _path_labels(path)
    row: dict[str, Any] = {
        "material": record.id,
        "status": "ok",
        "error": "",
        "formula": record.formula,
        "reference_name": record.reference_name,
        "n_primitive_atoms": record.n_primitive_atoms,
        "n_supercell_atoms": record.n_supercell_atoms,
        "volume": float(model.unitcell.volume),
        "volume_ref": float(record.unitcell.get_volume()),
        "band_segment": segment,
        "band_label": labels,
        "band_distance": ref["band_distance"],
        "dos_frequency": grid,
        "dos": _dos(model, grid, settings),
        "dos_ref": _dos(reference, grid, settings),
    }
    for key in ("omega_max", "omega_max_mesh", "min_frequency", "gamma_acoustic", "entropy", "free_energy", "heat_capacity"):
        row[key] = ours[key]
        row[f"{key}_ref"] = ref[key]
    row["band_frequency"] = ours["band_frequency"]
    row["band_frequency_ref"] = ref["band_frequency"]
    row["band_mae"] = float(np.abs(ours["band_frequency"] - ref["band_frequency"]).mean())
    row["mode_mae"] = float(np.abs(ours["commensurate_frequencies"] - ref["commensurate_frequencies"]).mean())
    for suffix, side in (("", ours), ("_ref", ref)):
        row[f"stable{suffix}"] = bool(
            side["min_frequency"] >= -settings.stability_tolerance and side["gamma_acoustic"] >= -settings.gamma_tolerance
        )
    row["time_properties"] = time.perf_counter() - t0
    return row


def evaluate_material(
    model: ModelLike, record: Record, settings: PhononSettings = PhononSettings()
) -> dict[str, Any]:
    """Model and DFT phonon properties of one record, with identical phonopy settings.

    Args:
        model: a checkpoint path, `Potential`, ASE calculator or `ForceProvider`.
        record: the material and its reference force constants.
        settings: the protocol.

    Raises whatever goes wrong (unknown element, relaxation not converged, bad record): the
    caller records the failure and goes on with the other materials.

    Returns:
        A result row: scalars, temperature-resolved arrays, the band path and the DOS, model and
        `_ref` side by side (see `results.to_dataset` for names and units).
    """
    phonon, info = model_phonopy(as_provider(model), record, settings)
    # a reference made from DFT forces goes through the model's own pipeline
    reference = record.to_phonopy(settings.fc_symmetrization, settings.remove_drift)
    row = compare(phonon, reference, record, settings)
    row.update(info)
    return row
