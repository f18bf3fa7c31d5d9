"""Records: readers against phonopy/phono3py on the real data in shared/, and every bad input."""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from conftest import shared_file

from phonon_eval.records import (
    MDR_REFERENCE_KEYS,
    Record,
    RecordError,
    read_record,
    record_id,
    write_record,
)

MDR = "data/mdr/mp-149.yaml"


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path_factory, monkeypatch):
    # phonopy.load / phono3py.load pick up FORCE_SETS, BORN, fc*.hdf5 from the working directory
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="module")
def mdr_raw() -> dict:
    return yaml.load(shared_file(MDR).read_bytes(), Loader=yaml.CSafeLoader)


@pytest.fixture(scope="module")
def mdr_record() -> Record:
    return read_record(shared_file(MDR))


@pytest.fixture(scope="module")
def mdr_phonopy():
    import phonopy

    return phonopy.load(shared_file(MDR), is_compact_fc=False, produce_fc=False, is_nac=False)


@pytest.fixture(scope="module")
def nacl_fc() -> np.ndarray:
    """NaCl force constants as phonopy.load produces them from FORCE_SETS, full form."""
    import phonopy

    folder = shared_file("data/dft/phonopy-NaCl")
    ph = phonopy.load(
        folder / "phonopy_disp.yaml",
        force_sets_filename=folder / "FORCE_SETS",
        born_filename=folder / "BORN",
        is_compact_fc=False,
    )
    return ph.force_constants


@pytest.fixture(scope="module")
def nacl_params(tmp_path_factory) -> Path:
    """A small phonopy_params.yaml (NaCl, forces and NAC) written by phonopy itself."""
    import phonopy

    folder = shared_file("data/dft/phonopy-NaCl")
    ph = phonopy.load(
        folder / "phonopy_disp.yaml",
        force_sets_filename=folder / "FORCE_SETS",
        born_filename=folder / "BORN",
        produce_fc=False,
    )
    path = tmp_path_factory.mktemp("params") / "phonopy_params.yaml"
    ph.save(path)
    return path


def _write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, default_flow_style=None))
    return path


# --------------------------------------------------------------------------------------------
# MDR phonon-database files
# --------------------------------------------------------------------------------------------


def test_mdr_force_constants_equal_phonopy_load(mdr_record, mdr_phonopy):
    ph = mdr_phonopy
    assert mdr_record.force_constants.shape == (64, 64, 3, 3)
    np.testing.assert_array_equal(mdr_record.force_constants, ph.force_constants)
    np.testing.assert_array_equal(mdr_record.to_phonopy().force_constants, ph.force_constants)
    np.testing.assert_array_equal(mdr_record.supercell_matrix, ph.supercell_matrix)
    np.testing.assert_allclose(mdr_record.primitive_matrix, ph.primitive_matrix)
    assert mdr_record.nac_params is None


def test_mdr_structure_and_supercell_order(mdr_record, mdr_raw, mdr_phonopy):
    assert mdr_record.id == "mp-149"
    assert mdr_record.formula == "Si"
    assert mdr_record.space_group == ("Fd-3m", 227)
    points = mdr_raw["unit_cell"]["points"]
    assert mdr_record.unitcell.get_chemical_symbols() == [p["symbol"] for p in points]
    np.testing.assert_allclose(mdr_record.unitcell.get_masses(), [p["mass"] for p in points])
    positions = mdr_record.unitcell.get_scaled_positions(wrap=False)
    np.testing.assert_allclose(positions, [p["coordinates"] for p in points])
    np.testing.assert_allclose(np.array(mdr_record.unitcell.cell), mdr_raw["unit_cell"]["lattice"])
    supercell = mdr_record.supercell()
    ph = mdr_phonopy
    assert supercell.get_chemical_symbols() == list(ph.supercell.symbols)
    positions = supercell.get_scaled_positions(wrap=False)
    np.testing.assert_allclose(positions, ph.supercell.scaled_positions)
    np.testing.assert_allclose(supercell.get_masses(), ph.supercell.masses)
    assert mdr_record.n_supercell_atoms == len(supercell) == 64
    assert mdr_record.n_primitive_atoms == 2


def test_mdr_reference_values_are_the_raw_yaml(mdr_record, mdr_raw):
    assert set(mdr_record.reference) == set(MDR_REFERENCE_KEYS)
    for key in MDR_REFERENCE_KEYS:
        raw = np.array(mdr_raw[key])
        np.testing.assert_array_equal(mdr_record.reference[key], raw, err_msg=key)
    assert mdr_record.reference["phonon_freq"].shape == (8, 6)
    assert mdr_record.reference["group_velocities"].shape == (8, 6, 3)
    assert mdr_record.reference["temperatures"].tolist() == [0.0, 75.0, 150.0, 300.0, 600.0]
    assert mdr_record.reference["nsites"] == 8


@pytest.mark.filterwarnings("ignore:.*acoustic mode")  # the MDR values include them too
def test_mdr_reference_units_are_phonopys(mdr_record):
    """The documented convention: phonopy's default mesh, kJ/mol and J/K/mol per primitive cell."""
    ph = mdr_record.to_phonopy()
    ph.run_mesh(100.0)
    ph.run_thermal_properties(temperatures=mdr_record.reference["temperatures"])
    tp = ph.thermal_properties
    np.testing.assert_allclose(tp.free_energy, mdr_record.reference["free_e"], atol=1e-4)
    np.testing.assert_allclose(tp.entropy, mdr_record.reference["entropy"], atol=1e-3)
    np.testing.assert_allclose(tp.heat_capacity, mdr_record.reference["heat_capacity"], atol=1e-4)
    ph.run_mesh([2, 2, 2], is_gamma_center=True, is_mesh_symmetry=False)
    np.testing.assert_allclose(ph.mesh.frequencies, mdr_record.reference["phonon_freq"], atol=1e-5)


@pytest.mark.parametrize(
    "suffix, compress", [(".xz", lzma.compress), (".gz", gzip.compress), (".bz2", bz2.compress)]
)
def test_compressed_mdr_reads_identically(mdr_record, tmp_path, suffix, compress):
    path = tmp_path / f"mp-149.yaml{suffix}"
    path.write_bytes(compress(shared_file(MDR).read_bytes()))
    record = read_record(path)
    assert record.id == "mp-149"
    np.testing.assert_array_equal(record.force_constants, mdr_record.force_constants)
    for key, value in mdr_record.reference.items():
        np.testing.assert_array_equal(record.reference[key], value)
    np.testing.assert_array_equal(record.unitcell.positions, mdr_record.unitcell.positions)
    for a, b in zip(record.dataset["first_atoms"], mdr_record.dataset["first_atoms"]):
        np.testing.assert_array_equal(a["forces"], b["forces"])


def test_compression_is_recognised_by_content(mdr_record, tmp_path):
    path = tmp_path / "mp-149.yaml"  # xz data under a plain name
    path.write_bytes(lzma.compress(shared_file(MDR).read_bytes()))
    np.testing.assert_array_equal(read_record(path).force_constants, mdr_record.force_constants)


def test_record_id():
    assert record_id("a/mp-149.yaml") == "mp-149"
    assert record_id("a/mp-149.yaml.xz") == "mp-149"
    assert record_id("a/Cu3Au-L12.yml.bz2") == "Cu3Au-L12"


# --------------------------------------------------------------------------------------------
# phonopy folders and params files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, born", [("phonopy-Al2O3", True), ("phonopy-MgB2", False)])
def test_phonopy_folder_equals_phonopys_own_force_constants(name, born):
    import phonopy

    folder = shared_file(f"data/dft/{name}")
    record = read_record(folder)
    assert record.id == name and record.force_constants is None
    ref = phonopy.load(
        folder / "phonopy_disp.yaml",
        force_sets_filename=folder / "FORCE_SETS",
        born_filename=folder / "BORN" if born else None,
        is_compact_fc=False,
    )
    ph = record.to_phonopy()
    np.testing.assert_array_equal(ph.force_constants, ref.force_constants)
    np.testing.assert_allclose(ph.primitive_matrix, ref.primitive_matrix)
    assert record.primitive_matrix is None or len(ph.primitive) == len(ref.primitive)
    if born:
        for key in ("born", "dielectric", "factor"):
            np.testing.assert_array_equal(ph.nac_params[key], ref.nac_params[key])
    else:
        assert record.nac_params is None and ref.nac_params is None


def test_nacl_folder_and_params_file_equal_phonopys_own_force_constants(nacl_fc, nacl_params):
    import phonopy

    folder = read_record(shared_file("data/dft/phonopy-NaCl"))
    np.testing.assert_array_equal(folder.to_phonopy().force_constants, nacl_fc)
    params = read_record(nacl_params)  # the same forces and BORN, through phonopy_params.yaml
    assert params.id == "phonopy_params" and params.formula == "NaCl"
    np.testing.assert_array_equal(params.full_force_constants(), nacl_fc)
    ref = phonopy.load(nacl_params, produce_fc=False)
    for key in ("born", "dielectric", "factor"):
        np.testing.assert_array_equal(params.nac_params[key], ref.nac_params[key])
        # the yaml keeps 15 decimals of the BORN values
        np.testing.assert_allclose(folder.nac_params[key], ref.nac_params[key], atol=1e-12)


def test_compact_force_constants_are_expanded(nacl_fc, nacl_params, tmp_path):
    import phonopy
    from phonopy.harmonic.force_constants import full_fc_to_compact_fc

    ph = phonopy.load(nacl_params, produce_fc=False)
    ph.force_constants = full_fc_to_compact_fc(ph.primitive, nacl_fc)
    settings = {"force_constants": True, "force_sets": False, "displacements": False}
    ph.save(tmp_path / "phonopy_params.yaml", settings=settings)
    assert "shape: [ 2, 64 ]" in (tmp_path / "phonopy_params.yaml").read_text()
    record = read_record(tmp_path / "phonopy_params.yaml")
    assert record.dataset is None
    np.testing.assert_allclose(record.force_constants, nacl_fc, atol=1e-14)


def test_write_record_round_trip(nacl_fc, tmp_path):
    record = read_record(shared_file("data/dft/phonopy-NaCl"))
    fc = nacl_fc
    record = Record(**{**record.__dict__, "force_constants": fc, "reference": {"energy": -1.5}})
    path = write_record(record, tmp_path / "NaCl.yaml.xz", header="a test\nof two lines")
    assert path.read_bytes().startswith(b"\xfd7zXZ")
    assert [p.name for p in tmp_path.iterdir()] == ["NaCl.yaml.xz"]  # no temporary left behind
    back = read_record(path)
    assert back.id == "NaCl"
    np.testing.assert_allclose(back.force_constants, fc, atol=1e-14)
    np.testing.assert_allclose(back.nac_params["born"], record.nac_params["born"], atol=1e-12)
    np.testing.assert_allclose(back.unitcell.positions, record.unitcell.positions, atol=1e-12)
    for a, b in zip(back.dataset["first_atoms"], record.dataset["first_atoms"]):
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-15)
    assert back.reference == {"energy": -1.5}
    assert record.reference_name == back.reference_name == "DFT"


def test_records_say_what_their_reference_is(nacl_params, tmp_path):
    """MDR files by their own keys, generated data by the label the generator writes, phonopy
    files by the calculator phonopy's header names (DFT by convention), any file by its own
    `reference_name`; a bad label names the field."""
    assert read_record(shared_file(MDR)).reference_name == "MDR PBE"
    assert read_record(shared_file("data/dft/phonopy-MgB2")).reference_name == "DFT"
    assert read_record(shared_file("data/dft/phono3py-Si-PBE")).reference_name == "DFT"
    repo = Path(__file__).resolve().parents[1]
    assert read_record(repo / "data" / "emt" / "Cu-fcc.yaml.xz").reference_name == "EMT"
    assert read_record(repo / "data" / "emt-kappa" / "Cu-fcc.yaml.xz").reference_name == "EMT"
    raw = yaml.safe_load(nacl_params.read_text())
    for extra, name in (({"phonopy": {**raw["phonopy"], "calculator": "aims"}}, "DFT (aims)"), ({"reference_name": " PBEsol (VASP) "}, "PBEsol (VASP)")):
        path = tmp_path / "NaCl.yaml"
        path.write_text(yaml.safe_dump({**raw, **extra}))
        assert read_record(path).reference_name == name
    path.write_text(yaml.safe_dump({**raw, "reference_name": ["PBE"]}))
    with pytest.raises(RecordError, match="NaCl.yaml: material 'NaCl', field 'reference_name': must be a one-line"):
        read_record(path)


# --------------------------------------------------------------------------------------------
# phono3py
# --------------------------------------------------------------------------------------------


def test_phono3py_folder_fc2_from_fc3_dataset():
    import phono3py

    folder = shared_file("data/dft/phono3py-Si-PBE")
    record = read_record(folder)
    ref = phono3py.load(
        folder / "phono3py_disp.yaml", forces_fc3_filename=folder / "FORCES_FC3", produce_fc=False
    )
    np.testing.assert_array_equal(record.fc3_supercell_matrix, ref.supercell_matrix)
    assert len(record.fc3_dataset["first_atoms"]) == len(ref.dataset["first_atoms"])
    ref.produce_fc2(is_compact_fc=False)
    ref.symmetrize_fc2(use_symfc_projector=True)
    np.testing.assert_array_equal(record.full_force_constants(), ref.fc2)

    ph3 = record.to_phono3py(produce_fc=False)  # cheap: no fc3
    assert ph3.fc3 is None
    for mine, theirs in zip(ph3.dataset["first_atoms"], ref.dataset["first_atoms"]):
        np.testing.assert_array_equal(mine["forces"], theirs["forces"])
        for m2, t2 in zip(mine["second_atoms"], theirs["second_atoms"]):
            np.testing.assert_array_equal(m2["forces"], t2["forces"])


def test_phono3py_params_xz_with_nac():
    import phono3py

    path = shared_file("data/dft/phono3py-ZnTe-PBEsol/phono3py_params_ZnTe.yaml.xz")
    record = read_record(path)
    assert record.id == "phono3py_params_ZnTe" and record.formula == "ZnTe"
    folder_record = read_record(path.parent)  # the same file found through its folder
    assert folder_record.id == "phono3py-ZnTe-PBEsol"
    ref = phono3py.load(path, produce_fc=False)
    for key in ("born", "dielectric", "factor"):
        np.testing.assert_array_equal(record.nac_params[key], ref.nac_params[key])
    ref.produce_fc2(is_compact_fc=False)
    ref.symmetrize_fc2(use_symfc_projector=True)
    np.testing.assert_array_equal(folder_record.full_force_constants(), ref.fc2)


@pytest.mark.slow  # fc3 twice: ~10 s
def test_to_phono3py_fc3_equals_phono3py_load():
    import phono3py

    path = shared_file("data/dft/phono3py-ZnTe-PBEsol/phono3py_params_ZnTe.yaml.xz")
    ph3 = read_record(path).to_phono3py()
    ref = phono3py.load(path)
    np.testing.assert_allclose(ph3.fc3, ref.fc3, atol=1e-12)


def test_not_a_phono3py_record(mdr_record):
    with pytest.raises(RecordError) as err:
        mdr_record.to_phono3py()
    assert err.value.field == "fc3_dataset" and err.value.material == "mp-149"


# --------------------------------------------------------------------------------------------
# bad input: one clear RecordError each, naming file, material and field
# --------------------------------------------------------------------------------------------


def _check(err: pytest.ExceptionInfo, path: Path, material: str, field: str) -> None:
    assert err.value.file == path
    assert err.value.material == material
    assert err.value.field == field
    text = str(err.value)
    assert str(path) in text and material in text and field in text


def _mutated(nacl_params: Path, tmp_path: Path, change) -> Path:
    raw = yaml.load(nacl_params.read_text(), Loader=yaml.CSafeLoader)
    change(raw)
    return _write_yaml(tmp_path / "bad.yaml", raw)


def _set_fc(raw, shape, n):
    elements = np.zeros((n, 3, 3)).tolist()
    raw["force_constants"] = {"format": "compact", "shape": shape, "elements": elements}


def _unit(raw):
    return raw["unit_cell"]["points"]


def _super(raw):
    return raw["supercell"]["points"]


BAD_YAML = {  # case: (change to a good phonopy_params.yaml, field named in the error)
    "missing unit cell": (lambda raw: raw.pop("unit_cell"), "unit_cell"),
    "missing supercell matrix": (lambda raw: raw.pop("supercell_matrix"), "supercell_matrix"),
    "missing coordinates": (
        lambda raw: _unit(raw)[1].pop("coordinates"),
        "unit_cell.points[1].coordinates",
    ),
    "unknown symbol": (lambda raw: _unit(raw)[0].update(symbol="Xx"), "unit_cell.points[0].symbol"),
    "negative mass": (lambda raw: _unit(raw)[1].update(mass=-1.0), "unit_cell.points[1].mass"),
    "supercell symbols differ": (
        lambda raw: _super(raw)[3].update(symbol="K"),
        "supercell.points[3].symbol",
    ),
    "supercell masses differ": (
        lambda raw: _super(raw)[5].update(mass=1.0),
        "supercell.points[5].mass",
    ),
    "supercell order differs": (
        lambda raw: _super(raw).insert(0, _super(raw).pop(1)),
        "supercell.points[0].coordinates",
    ),
    "non-periodic (flat) lattice": (
        lambda raw: raw["unit_cell"].update(lattice=[[5.6, 0, 0], [0, 5.6, 0], [0, 0, 0]]),
        "unit_cell.lattice",
    ),
    "fc shape": (lambda raw: _set_fc(raw, [3, 64], 192), "force_constants.shape"),
    "fc elements": (lambda raw: _set_fc(raw, [2, 64], 100), "force_constants.elements"),
    "forces on too few atoms": (
        lambda raw: raw["displacements"][0].update(forces=[[0.0, 0.0, 0.0]] * 8),
        "displacements",
    ),
    "born charges": (
        lambda raw: raw["nac"].update(born_effective_charge=[np.eye(3).tolist()] * 3),
        "nac.born",
    ),
    "nothing to make fc from": (
        lambda raw: [d.pop("forces") for d in raw["displacements"]],
        "force_constants",
    ),
    "unsupported units": (
        lambda raw: raw["phonopy"].update(calculator="qe"),
        "phonopy.calculator",
    ),
}


@pytest.mark.parametrize("case", list(BAD_YAML))
def test_bad_yaml_names_file_material_and_field(nacl_params, tmp_path, case):
    change, field = BAD_YAML[case]
    path = _mutated(nacl_params, tmp_path, change)
    with pytest.raises(RecordError) as err:
        read_record(path)
    _check(err, path, "bad", field)


@pytest.mark.parametrize(
    "content",
    [b"unit_cell: [unclosed\n  - : :", b"\x00\x01\x02\xff\xfe binary", b"not a mapping"],
    ids=["broken yaml", "binary", "scalar"],
)
def test_not_yaml(tmp_path, content):
    path = tmp_path / "mp-1.yaml"
    path.write_bytes(content)
    with pytest.raises(RecordError) as err:
        read_record(path)
    _check(err, path, "mp-1", "yaml")


def test_corrupt_xz_and_missing_file(tmp_path):
    path = tmp_path / "mp-2.yaml.xz"
    path.write_bytes(lzma.compress(b"unit_cell: {}\n" * 100)[:40])
    with pytest.raises(RecordError) as err:
        read_record(path)
    _check(err, path, "mp-2", "file")
    with pytest.raises(RecordError) as err:
        read_record(tmp_path / "nothing.yaml")
    _check(err, tmp_path / "nothing.yaml", "nothing", "file")


def test_phonopy_folder_problems(tmp_path):
    source = shared_file("data/dft/phonopy-MgB2")
    folder = tmp_path / "MgB2"
    folder.mkdir()
    shutil.copy(source / "phonopy_disp.yaml", folder)
    with pytest.raises(RecordError) as err:  # no FORCE_SETS
        read_record(folder)
    _check(err, folder / "FORCE_SETS", "MgB2", "FORCE_SETS")
    lines = (source / "FORCE_SETS").read_text().splitlines()
    (folder / "FORCE_SETS").write_text("\n".join(["40"] + lines[1:]) + "\n")  # 40 atoms, not 54
    with pytest.raises(RecordError) as err:
        read_record(folder)
    _check(err, folder / "FORCE_SETS", "MgB2", "forces")
    shutil.copy(source / "FORCE_SETS", folder)
    (folder / "BORN").write_text("14.4\n1 0 0\n")
    with pytest.raises(RecordError) as err:
        read_record(folder)
    _check(err, folder / "BORN", "MgB2", "BORN")


def test_record_invariants_in_code():
    cell = Atoms("Cu", cell=np.eye(3) * 2.5, pbc=[True, True, False])
    smat = np.eye(3) * 2
    with pytest.raises(RecordError) as err:
        Record("Cu", cell, smat, force_constants=np.zeros((8, 8, 3, 3)))
    assert err.value.field == "unit_cell" and "periodic" in err.value.message
    cell.pbc = True
    with pytest.raises(RecordError) as err:
        Record("Cu", cell, smat, force_constants=np.zeros((4, 4, 3, 3)))
    assert err.value.field == "force_constants" and "8 atoms" in err.value.message
    with pytest.raises(RecordError) as err:
        Record("Cu", cell, np.eye(3) * 1.5, force_constants=np.zeros((1, 1, 3, 3)))
    assert err.value.field == "supercell_matrix"
    with pytest.raises(RecordError) as err:
        Record(id="Cu", unitcell=cell, supercell_matrix=np.eye(3))
    assert err.value.field == "force_constants" and "neither" in err.value.message


def test_record_error_survives_pickling(tmp_path):
    import pickle

    err = RecordError(tmp_path / "x.yaml", "x", "supercell_matrix", "missing key")
    back = pickle.loads(pickle.dumps(err))  # as it comes back from a dask worker
    assert (back.file, back.material, back.field) == (err.file, "x", "supercell_matrix")
    assert str(back) == str(err)


def test_an_mdr_file_with_nan_energy_reads_without_it_and_is_refused_only_for_energy_training(tmp_path):
    """The MDR database serves `energy: .nan` for some records (the example record of the public
    benchmark scripts does): the energy is an optional training target, nothing more."""
    from finetune.data import phonon_examples

    text = shared_file(MDR).read_text()
    assert "\nenergy: -43.36303155\n" in text
    path = tmp_path / "mp-149.yaml"
    path.write_text(text.replace("\nenergy: -43.36303155\n", "\nenergy: .nan\n"))
    record = read_record(path)
    assert "energy" not in record.reference and record.reference["volume"] == pytest.approx(163.41794402694612)
    assert phonon_examples([record])[0].energy == 0.0
    with pytest.raises(ValueError, match=r"mp-149\.yaml: material 'mp-149', field 'energy': missing or NaN, but energy_weight > 0"):
        phonon_examples([record], need_energy=True)


def test_a_phonopy_2x_file_without_primitive_matrix_means_its_own_primitive_cell(tmp_path):
    """phonopy 2.x wrote phonopy_disp.yaml with no `primitive_matrix` and the primitive cell it
    used (here the 8-atom unit cell, as in phonopy's MgO example). Read as the file means it: the
    same physics (ω at the commensurate points) per 8-atom cell, so per-mole S is 4 times NaCl's."""
    import phonopy

    from phonon_eval.phonons import _commensurate_points
    from phonon_eval.records import RecordWarning

    source = shared_file("data/dft/phonopy-NaCl")
    folder = tmp_path / "NaCl-2x"
    folder.mkdir()
    for name in ("FORCE_SETS", "BORN"):
        shutil.copy(source / name, folder / name)
    raw = yaml.safe_load((source / "phonopy_disp.yaml").read_text())
    del raw["primitive_matrix"]
    raw["primitive_cell"] = raw["unit_cell"]
    raw["phonopy"]["version"] = "2.7.1"
    (folder / "phonopy_disp.yaml").write_text(yaml.safe_dump(raw))

    with pytest.warns(RecordWarning, match=r"no primitive_matrix .* primitive_cell \(8 atoms\); phonopy's 'auto' would build 2"):
        old = read_record(folder)
    new = read_record(source)
    assert old.n_primitive_atoms == 8 and new.n_primitive_atoms == 2
    phonons = []
    for record, mesh in ((old, [8, 8, 8]), (new, [16, 16, 16])):
        ph = record.to_phonopy()
        ph.run_qpoints(_commensurate_points(ph))
        ph.run_mesh(mesh)
        ph.run_thermal_properties(temperatures=[300.0])
        phonons.append((ph.qpoints.frequencies.max(), ph.thermal_properties.entropy[0]))
    assert phonons[0][0] == pytest.approx(phonons[1][0], abs=1e-3)
    assert phonons[0][1] == pytest.approx(4 * phonons[1][1], rel=5e-3)
    assert isinstance(old.to_phonopy(), phonopy.Phonopy)
