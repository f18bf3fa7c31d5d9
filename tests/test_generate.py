"""The record generator: EMT records round-trip, equal phonopy on the same forces and data/emt."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from conftest import REPO

from phonon_eval.datasets import Dataset
from phonon_eval.generate import (
    EMT_SPLIT,
    Material,
    emt_materials,
    generate_dataset,
    generate_record,
    main,
    make_split,
    relax,
)
from phonon_eval.records import RecordError, phonopy_from_ase, read_record

MATERIALS = {m.id: m for m in emt_materials()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Cu (fcc) and CuAu (L1_0) generated into a fresh folder, as a dataset."""
    folder = tmp_path_factory.mktemp("emt")
    split = {"train": ["Cu-fcc"], "test": ["CuAu-L10"]}
    materials = [MATERIALS["Cu-fcc"], MATERIALS["CuAu-L10"]]
    paths = generate_dataset(materials, EMT(), folder, split=split)
    return folder, paths


def test_generated_records_round_trip(generated):
    import phonopy

    folder, paths = generated
    assert [p.name for p in paths] == ["Cu-fcc.yaml.xz", "CuAu-L10.yaml.xz"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["Cu-fcc.yaml.xz", "CuAu-L10.yaml.xz", "split.json"]
    for path in paths:
        record = read_record(path)
        assert record.reference_name == "EMT"
        # phonopy's own force constants from the same forces, on a fresh object
        ph = phonopy.Phonopy(
            phonopy_from_ase(record.unitcell),
            record.supercell_matrix,
            primitive_matrix=record.phonopy_primitive_matrix,
        )
        ph.dataset = record.dataset
        ph.produce_force_constants(calculate_full_force_constants=True)
        ph.symmetrize_force_constants(show_drift=False, use_symfc_projector=True)
        np.testing.assert_allclose(record.force_constants, ph.force_constants, atol=1e-12)
        # ... and from phonopy.load on the written file itself, ignoring the stored fc
        loaded = phonopy.load(path, is_compact_fc=False)
        np.testing.assert_allclose(record.force_constants, loaded.force_constants, atol=1e-12)
        for d in record.dataset["first_atoms"]:
            assert np.linalg.norm(d["displacement"]) == pytest.approx(0.01)


def test_generated_records_are_relaxed_and_physical(generated):
    folder, _ = generated
    cu = read_record(folder / "Cu-fcc.yaml.xz")
    atoms = cu.unitcell.copy()
    atoms.calc = EMT()
    assert np.abs(atoms.get_stress()).max() < 1e-5  # eV/Å³: at the EMT equilibrium
    assert len(cu.unitcell) == 4 and cu.n_primitive_atoms == 1 and cu.n_supercell_atoms == 32
    assert cu.space_group == ("Fm-3m", 225)
    ref = cu.reference
    assert ref["temperatures"].tolist() == [0.0, 75.0, 150.0, 300.0, 600.0]
    assert 0.95 * 24.94 < ref["heat_capacity"][-1] < 24.94  # just below Dulong-Petit 3R at 600 K
    assert ref["entropy"][0] == 0 and np.all(np.diff(ref["entropy"]) > 0)
    ph = cu.to_phonopy()
    ph.run_mesh(20)
    assert ph.mesh.frequencies.min() > -1e-3  # dynamically stable

    cuau = read_record(folder / "CuAu-L10.yaml.xz")
    a, _, c = cuau.unitcell.cell.cellpar()[:3]
    assert c / a == pytest.approx(0.906, abs=0.01)  # c/a relaxed away from the cubic start
    assert cuau.space_group == ("P4/mmm", 123) and cuau.n_primitive_atoms == 2


def test_generated_dataset_is_valid(generated):
    folder, _ = generated
    ds = Dataset(folder)
    assert ds.validate() == []
    split = json.loads((folder / "split.json").read_text())
    assert split == {"train": ["Cu-fcc"], "test": ["CuAu-L10"]}


def test_committed_emt_data_matches_the_generator(tmp_path):
    """data/emt is what the current code makes (to well below any physics that matters)."""
    path = generate_record(MATERIALS["Pt-fcc"], EMT(), tmp_path)
    fresh, committed = read_record(path), read_record(REPO / "data" / "emt" / "Pt-fcc.yaml.xz")
    np.testing.assert_allclose(fresh.unitcell.cell, committed.unitcell.cell, atol=1e-8)
    np.testing.assert_allclose(fresh.force_constants, committed.force_constants, atol=1e-8)
    # The sums include Gamma's acoustic modes (the MDR convention, phonopy's default cutoff of 0),
    # whose frequencies are round-off (~1e-7 THz): the sign each gets on a given CPU decides whether
    # it enters the sums. Such a mode adds exactly k_B w_Gamma / sum(w) to C_V (its classical limit;
    # 9.8e-5 J/K/mol on Pt's 44^3 mesh, seen between two machines), so the C_V difference must be a
    # whole number of those, at most three; F and S get kT ln(h nu / kT) / N_q, which depends on the
    # round-off value itself (2.3e-3 kJ/mol at 600 K for two modes), so they get a bound instead.
    ph = fresh.to_phonopy()
    ph.run_mesh(100.0)
    weights = ph.mesh.weights
    gamma = np.flatnonzero(np.all(ph.mesh.qpoints == 0, axis=1))
    assert gamma.size == 1  # the mesh is not shifted: Gamma is on it
    per_mode = 8.314462618 * weights[gamma].sum() / weights.sum()  # R in J/K/mol
    heat = fresh.reference["heat_capacity"] - committed.reference["heat_capacity"]
    modes = heat / per_mode
    np.testing.assert_allclose(modes, np.round(modes), atol=1e-3, err_msg="heat_capacity")
    assert np.abs(np.round(modes)).max() <= 3
    assert heat[0] == 0.0  # no mode has heat capacity at 0 K
    loose = {"free_e": 1e-2, "entropy": 2e-2, "heat_capacity": 3 * per_mode}
    for key, value in committed.reference.items():
        atol = loose.get(key, 1e-6)
        np.testing.assert_allclose(fresh.reference[key], value, rtol=1e-6, atol=atol, err_msg=key)
    np.testing.assert_allclose(fresh.reference["free_e"][0], committed.reference["free_e"][0], rtol=1e-8)


def test_emt_materials_and_split():
    assert len(MATERIALS) == 16
    assert sorted(sum(EMT_SPLIT.values(), [])) == sorted(MATERIALS)
    assert {name: len(ids) for name, ids in EMT_SPLIT.items()} == {"train": 9, "val": 3, "test": 4}
    formulas = {m.atoms.get_chemical_formula() for m in MATERIALS.values()}
    assert formulas >= {"Au4", "AuCu3", "Au2Cu2"}


def test_make_split_is_deterministic_and_partitions():
    ids = [f"mp-{i}" for i in range(20)]
    split = make_split(ids, seed=3)
    assert split == make_split(list(reversed(ids)), seed=3)
    assert sorted(sum(split.values(), [])) == sorted(ids)
    assert [len(v) for v in split.values()] == [12, 4, 4]


def test_relax_any_calculator_keeps_symmetry():
    atoms = bulk("Ni", "fcc", a=3.6)  # primitive cell, full cell relaxation
    relaxed = relax(atoms, EMT())
    assert relaxed.calc is None and atoms.cell.cellpar()[0] == pytest.approx(3.6 / np.sqrt(2))
    assert relaxed.cell.cellpar()[3:] == pytest.approx([60.0, 60.0, 60.0], abs=1e-6)


def test_non_periodic_structure_is_refused(tmp_path):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]], cell=[10, 10, 10])  # pbc False
    molecule = Material("Cu2", atoms, (1, 1, 1))
    with pytest.raises(RecordError) as err:
        generate_record(molecule, EMT(), tmp_path)
    assert err.value.material == "Cu2" and err.value.field == "unit_cell"
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        generate_record(MATERIALS["Al-fcc"], EMT(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_main_writes_selected_records(tmp_path, capsys):
    assert main([str(tmp_path), "--only", "Ag-fcc", "--suffix", ".yaml"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Ag-fcc.yaml", "split.json"]
    split = json.loads((tmp_path / "split.json").read_text())
    assert split == {"train": [], "val": ["Ag-fcc"], "test": []}
    assert read_record(tmp_path / "Ag-fcc.yaml").formula == "Ag"
    assert "wrote 1 records" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), "--only", "Fe-bcc"])
    assert exit_.value.code == 2


def test_committed_frames_match_the_generator(tmp_path):
    """data/emt-frames is what `--frames` makes: EMT energy, forces and stress of each frame."""
    from finetune.data import read_frames

    assert main([str(tmp_path), "--frames", "--only", "Cu-fcc", "Au3Cu-L12"]) == 0
    fresh = read_frames(tmp_path / "train.extxyz.xz")
    assert len(fresh) == 2 * 12 and {a.info["material"] for a in fresh} == {"Cu-fcc", "Au3Cu-L12"}
    for atoms in fresh[:3]:
        stored = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = EMT()
        np.testing.assert_allclose(atoms.get_potential_energy(), stored[0], atol=1e-6)  # extxyz keeps 8 decimals
        np.testing.assert_allclose(atoms.get_forces(), stored[1], atol=1e-6)
        np.testing.assert_allclose(atoms.get_stress(), stored[2], atol=1e-8)
    # the committed files: every material, 12 training and 4 validation frames each
    committed = read_frames(REPO / "data" / "emt-frames" / "train.extxyz.xz")
    assert len(committed) == 16 * 12 and len(read_frames(REPO / "data" / "emt-frames" / "val.extxyz.xz")) == 16 * 4
    cu = [a for a in committed if a.info["material"] == "Cu-fcc"]
    assert len(cu) == 12 and all(len(a) == 32 for a in cu)


def test_kappa_record_is_a_phono3py_record(tmp_path):
    from phonon_eval.kappa import KappaMaterial

    assert main([str(tmp_path), "--kappa"]) == 0
    fresh = read_record(tmp_path / "Cu-fcc.yaml.xz")
    committed = read_record(REPO / "data" / "emt-kappa" / "Cu-fcc.yaml.xz")
    assert fresh.reference_name == committed.reference_name == "EMT"
    assert fresh.fc3_dataset is not None and len(fresh.fc3_dataset["first_atoms"]) == len(committed.fc3_dataset["first_atoms"])
    np.testing.assert_allclose(fresh.unitcell.cell, committed.unitcell.cell, atol=1e-8)
    assert json.loads((tmp_path / "split.json").read_text()) == {"test": ["Cu-fcc"]}
    material = KappaMaterial.from_record(committed)
    assert material.id == "Cu-fcc" and len(material.unitcell) == 4


def test_low_symmetry_materials_have_many_column_classes(tmp_path):
    """The probes' hard case: distorted alloys whose supercells keep inversion only (P-1), so a
    32-atom supercell has 12 classes of Hessian columns instead of 1 to 4, with relaxed forces."""
    from phonon_eval.generate import low_symmetry_materials
    from phonon_eval.symmetry import SupercellSymmetry

    for material in low_symmetry_materials(2):
        record = read_record(generate_record(material, EMT(), tmp_path))
        symmetry = SupercellSymmetry.from_atoms(record.supercell())
        assert symmetry.number == 2 and len(symmetry.column_orbits()) == 12, material.id
        atoms = record.unitcell.copy()
        atoms.calc = EMT()
        assert np.abs(atoms.get_forces()).max() < 1e-4
