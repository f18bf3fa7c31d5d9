"""The phonon evaluator against phonopy itself, the issue's Si numbers, and its results file."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import phonopy
import pytest
import xarray as xr

import phonon_eval as pe
from conftest import shared_file
from phonon_eval.phonons import PhononSettings, compare, evaluate_material
from phonon_eval.records import read_record
from phonon_eval.results import failed_row, metrics, rows_from_dataset, to_dataset, write_atomic

FAST = PhononSettings(mesh=(8, 8, 8), temperatures=(0.0, 100.0, 300.0, 500.0), band_points=11)


@pytest.fixture(scope="module")
def si_record():
    return read_record(shared_file("data/mdr/mp-149.yaml"))


def test_reference_as_model_gives_zero_error_and_phonopy_values(si_record):
    row = compare(si_record.to_phonopy(), si_record.to_phonopy(), si_record, FAST)
    for key in ("omega_max", "entropy", "free_energy", "heat_capacity", "band_frequency", "dos"):
        np.testing.assert_array_equal(row[key], row[key + "_ref"])
    assert row["band_mae"] == 0.0

    # every property is what phonopy returns for the same force constants and settings
    ph = phonopy.load(shared_file("data/mdr/mp-149.yaml"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph.run_mesh([8, 8, 8])
    ph.run_thermal_properties(temperatures=[0.0, 100.0, 300.0, 500.0])
    tp = ph.thermal_properties
    np.testing.assert_allclose(row["entropy"], tp.entropy, rtol=1e-12)
    np.testing.assert_allclose(row["free_energy"], tp.free_energy, rtol=1e-12)
    np.testing.assert_allclose(row["heat_capacity"], tp.heat_capacity, rtol=1e-12)
    assert row["omega_max_mesh"] == pytest.approx(ph.mesh.frequencies.max(), rel=1e-12)
    # commensurate points of the 2x2x2 conventional supercell of fcc Si: 32 q-points
    from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

    smat = np.rint(np.linalg.inv(ph.primitive_matrix) @ ph.supercell_matrix).astype(int)
    ph.run_qpoints(get_commensurate_points(smat))
    assert row["omega_max"] == pytest.approx(ph.qpoints.frequencies.max(), rel=1e-12)
    # MDR stores DFT frequencies at the commensurate points with the record: same maximum
    assert row["omega_max_ref"] == pytest.approx(si_record.reference["phonon_freq"].max(), rel=1e-9)


@pytest.mark.parametrize("folder", ["phonopy-NaCl", "phonopy-Al2O3", "phonopy-MgB2"])
def test_dft_examples_evaluate(folder):
    record = read_record(shared_file(f"data/dft/{folder}"))
    ref = record.to_phonopy()
    assert (ref.nac_params is not None) == (folder != "phonopy-MgB2")  # BORN where present
    row = compare(record.to_phonopy(), ref, record, FAST)
    assert row["band_frequency"].shape[1] == 3 * record.n_primitive_atoms
    assert row["stable_ref"] and np.isfinite(row["entropy_ref"]).all()
    assert row["band_mae"] == 0.0


def test_si_with_nequix_matches_the_issue_numbers():
    """Issue 4: phonopy 4.10, 20x20x20 mesh, 300 K, after relaxation (a = 5.504 Å), within 0.5 %."""
    record = read_record(shared_file("data/mdr/mp-149.yaml"))
    settings = PhononSettings(temperatures=(0.0, 300.0), band_points=11)
    rows = {}
    for name in ("nequix-mp-1", "nequix-mp-1-pft"):
        rows[name] = evaluate_material(pe.load_potential(shared_file(f"models/{name}.nqx")), record, settings)
    row = rows["nequix-mp-1"]
    expected = {"entropy": 41.02, "free_energy": 5.42, "heat_capacity": 41.58}
    expected_ref = {"entropy": 39.33, "free_energy": 6.52, "heat_capacity": 40.07}
    for key in expected:
        assert row[key][1] == pytest.approx(expected[key], rel=5e-3), key
        assert row[key + "_ref"][1] == pytest.approx(expected_ref[key], rel=5e-3), key
    # and the DFT side agrees with the values MDR stores with the record
    stored = record.reference
    i300 = list(stored["temperatures"]).index(300.0)
    for key, mdr in [("entropy", "entropy"), ("free_energy", "free_e"), ("heat_capacity", "heat_capacity")]:
        assert row[key + "_ref"][1] == pytest.approx(stored[mdr][i300], rel=1e-3), key
    assert row["omega_max_mesh"] == pytest.approx(13.96, rel=5e-3)
    assert row["omega_max_mesh_ref"] == pytest.approx(15.10, rel=5e-3)
    a = (row["volume"] * 4 / len(record.unitcell) * 2) ** (1 / 3)  # conventional 8-atom cube
    assert a == pytest.approx(5.504, abs=2e-3)
    assert row["n_fc_evaluations"] == 1  # one HVP for all of diamond Si
    # PFT moves every property toward DFT
    pft = rows["nequix-mp-1-pft"]
    for key in ("entropy", "free_energy", "heat_capacity"):
        assert abs(pft[key][1] - pft[key + "_ref"][1]) < abs(row[key][1] - row[key + "_ref"][1]), key
    assert abs(pft["omega_max"] - pft["omega_max_ref"]) < abs(row["omega_max"] - row["omega_max_ref"])


def _rows(si_record):
    ok = compare(si_record.to_phonopy(), si_record.to_phonopy(), si_record, FAST)
    ok["relax_steps"], ok["n_fc_evaluations"] = 0, 0
    ok.update(time_relax=0.0, time_fc=0.0)
    return [ok, failed_row("mp-0", "UnknownElementError: the potential does not know Og (Z=118)")]


def test_results_round_trip_through_netcdf(tmp_path, si_record):
    rows = _rows(si_record)
    ds = to_dataset(rows, np.asarray(FAST.temperatures), {"model": "m.ckpt"})
    for name, var in ds.data_vars.items():
        assert "long_name" in var.attrs, name
        if var.dtype.kind == "f":
            assert "units" in var.attrs, name
    path = tmp_path / "r.nc"
    write_atomic(ds, path)
    back = xr.load_dataset(path)
    xr.testing.assert_identical(back, ds)
    again = to_dataset(rows_from_dataset(back), np.asarray(FAST.temperatures), dict(ds.attrs))
    xr.testing.assert_identical(again, ds)
    assert list(back["status"].values) == ["ok", "failed"]
    assert "Og" in str(back["error"].values[1])
    m = metrics(back)
    assert m["n_ok"] == 1 and m["n_failed"] == 1 and m["entropy"] == 0.0
