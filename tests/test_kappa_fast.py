"""The `fast` κ route: fc2 and fc3 fitted by symfc to a few random-displacement supercells.

Checked against the pair route (phono3py's systematic displacements, the `phono3py` protocol) on
the same force field and the same cell, to the tolerance the convergence study set
(benchmarks/kappa_fast.py: κ within 1 %, SRME within 0.01), and for the refusal of too few
supercells, where symfc would otherwise fit more parameters than it has forces.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT
from phono3py import Phono3py

from conftest import REPO
from phonon_eval.kappa import (
    KappaMaterial,
    KappaSettings,
    evaluate_material,
    free_parameters,
    generate_displacements,
    produce_force_constants,
)
from phonon_eval.records import ase_from_phonopy, phonopy_from_ase, read_record

FAST = {"relax": False, "mesh": (9, 9, 9), "method": "rta", "isotope": False}


def _cu() -> KappaMaterial:
    material = KappaMaterial.from_record(read_record(REPO / "data" / "emt-kappa" / "Cu-fcc.yaml.xz"))
    return KappaMaterial(**{**vars(material), "reference": None})


def _emt_force_constants(material: KappaMaterial, settings: KappaSettings) -> Phono3py:
    ph3 = Phono3py(
        phonopy_from_ase(material.unitcell), supercell_matrix=material.fc3_supercell,
        primitive_matrix=material.primitive_matrix,
    )
    generate_displacements(ph3, settings)
    calc, forces = EMT(), []
    for displaced in ph3.supercells_with_displacements:
        atoms = ase_from_phonopy(displaced)
        atoms.calc = calc
        forces.append(atoms.get_forces())
    ph3.forces = np.array(forces)
    produce_force_constants(ph3, settings.fc_symmetrization, settings.cutoff)
    return ph3


def test_fast_route_reproduces_the_pair_route_fc3_and_kappa():
    material = _cu()
    pairs = _emt_force_constants(material, KappaSettings.from_protocol("phono3py", **FAST))
    fast = _emt_force_constants(material, KappaSettings.from_protocol("fast", **FAST))
    assert len(fast.supercells_with_displacements) <= len(pairs.supercells_with_displacements) / 4
    for name in ("fc2", "fc3"):
        a, b = getattr(pairs, name), getattr(fast, name)
        assert np.linalg.norm(b - a) / np.linalg.norm(a) < 0.03, name

    # against the record's own reference (its EMT pair forces), as a user compares the routes
    with_reference = KappaMaterial.from_record(read_record(REPO / "data" / "emt-kappa" / "Cu-fcc.yaml.xz"))
    full = evaluate_material(EMT(), with_reference, KappaSettings.from_protocol("phono3py", **FAST))
    row = evaluate_material(EMT(), with_reference, KappaSettings.from_protocol("fast", **FAST))
    assert row["status"] == "ok" and row["n_fc_parameters"] == free_parameters(pairs) == 99
    assert abs(row["kappa"][0] / full["kappa"][0] - 1) < 0.01
    assert abs(row["srme"][0] - full["srme"][0]) < 0.01
    assert full["n_fc_parameters"] == -1  # the pair route fits nothing


def test_too_few_random_supercells_are_refused_by_name():
    record = read_record(REPO / "data" / "emt" / "Au3Cu-L12.yaml.xz")  # 396 free parameters, 96 forces a supercell
    material = KappaMaterial(id=record.id, unitcell=record.unitcell, fc3_supercell=record.supercell_matrix)
    settings = KappaSettings.from_protocol("fast", random_supercells=4, **FAST)
    with pytest.raises(ValueError, match="4 random supercells give 384 force components for 396 free fc2 "
                                         r"\+ fc3 parameters: at least 10 supercells are needed \(2x the 5"):
        evaluate_material(EMT(), material, settings)


def test_fast_settings_are_named_and_checked():
    fast = KappaSettings.from_protocol("fast")
    assert (fast.displacements, fast.fc_symmetrization, fast.overrides) == ("random", "symfc", ())
    assert fast.as_attrs()["setting_protocol"] == "fast"
    with pytest.raises(ValueError, match="random displacements are fitted by symfc"):
        KappaSettings(displacements="random")
    with pytest.raises(ValueError, match="random_supercells must be even"):
        KappaSettings.from_protocol("fast", random_supercells=5)


def test_the_shared_graph_holds_displacements_off_the_axes(tiny_ckpt):
    """Random displacements are not along an axis: the graph's skin must hold their length."""
    import phonon_eval as pe
    from phonon_eval.provider import as_provider

    potential = pe.load_potential(tiny_ckpt)
    atoms = read_record(REPO / "data" / "emt-kappa" / "Cu-fcc.yaml.xz").supercell()
    rng = np.random.default_rng(0)
    diagonal = rng.choice([-1.0, 1.0], size=(2, len(atoms), 3)) * 0.1 / np.sqrt(3)  # 0.1 Å, 0.058 per axis
    positions = atoms.positions[None] + diagonal
    with pytest.raises(ValueError, match="an atom moves 0.100 Å, more than skin / 2 = 0.075 Å"):
        pe.batched_forces(potential, atoms, positions, skin=0.15)
    calc = potential.calculator()
    expected = []
    for r in positions:
        copy = atoms.copy()
        copy.positions, copy.calc = r, calc
        expected.append(copy.get_forces())
    np.testing.assert_allclose(as_provider(potential).forces(atoms, positions), expected, atol=1e-5)
