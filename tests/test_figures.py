"""Every figure from results files alone, on phonon and κ results, and the one-material accessor
against a manual cut of the ragged layout."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import phonon_eval as pe
from cli.eval import BUILTIN_DATASET, app
from phonon_eval import kappa_results
from phonon_eval.fanout import failed_row
from phonon_eval.plots import plot_bands, plot_kappa, plot_parity, plot_thermo, smear
from phonon_eval.results import common_materials, metrics
from phonon_eval.runner import write_atomic

runner = CliRunner()
FAST = ["--no-relax", "--mesh", "4", "--temperatures", "0,150,300,600", "--band-points", "5", "--no-progress"]
KAPPA_DATASET = BUILTIN_DATASET.parent / "emt-kappa"
PNG = b"\x89PNG\r\n\x1a\n"


def _run(*argv: str, some_failed: bool = False) -> None:
    res = runner.invoke(app, list(argv))
    # a run in which some materials failed writes its file and exits with a status of its own
    assert res.exit_code not in (0, 1, 2) if some_failed else res.exit_code == 0, res.output


@pytest.fixture(scope="session")
def phonons(tmp_path_factory, tiny_ckpt):
    """The tiny JAX model on the test split: Cu-fcc, Pt-fcc (failed: no Pt), Cu3Au-L12, CuAu-L10."""
    out = tmp_path_factory.mktemp("phonons") / "tiny.nc"
    _run("phonons", str(tiny_ckpt), "--split", "test", "--out", str(out), *FAST, some_failed=True)
    return out


@pytest.fixture(scope="session")
def emt_phonons(tmp_path_factory):
    """EMT, the reference's own calculator, on the same materials and settings."""
    out = tmp_path_factory.mktemp("phonons") / "emt.nc"
    _run("phonons", "--calculator", "ase.calculators.emt:EMT", "--split", "test", "--out", str(out), *FAST)
    return out


@pytest.fixture(scope="session")
def kappa(tmp_path_factory):
    """EMT κ of Cu-fcc on a 3×3×3 mesh."""
    out = tmp_path_factory.mktemp("kappa") / "kappa.nc"
    _run("kappa", "--calculator", "ase.calculators.emt:EMT", "--dataset", str(KAPPA_DATASET), "--mesh", "3",
         "--out", str(out), "--no-progress")
    return out


@pytest.fixture(scope="session")
def kappa_many(tmp_path_factory, kappa):
    """Three κ materials with different ragged lengths: Cu on a 3-mesh, a failure, Cu on a 4-mesh."""
    folder = tmp_path_factory.mktemp("kappa")
    _run("kappa", "--calculator", "ase.calculators.emt:EMT", "--dataset", str(KAPPA_DATASET), "--mesh", "4",
         "--out", str(folder / "mesh4.nc"), "--no-progress")
    (three,), (four,) = (kappa_results.rows_from_dataset(xr.load_dataset(p)) for p in (kappa, folder / "mesh4.nc"))
    rows = [{**three, "material": "Cu-m3"}, failed_row("Cu-none", "boom"), {**four, "material": "Cu-m4"}]
    ds = kappa_results.to_dataset(rows, xr.load_dataset(kappa)["temperature"].values, {"model": "EMT"})
    write_atomic(ds, folder / "many.nc")
    return folder / "many.nc"


# --- the accessor -------------------------------------------------------------------------


@pytest.mark.parametrize("material", ["Cu-fcc", "Pt-fcc", "Cu3Au-L12", "CuAu-L10"])
def test_material_of_a_phonon_file_is_the_ragged_slice(phonons, material):
    ds = xr.load_dataset(phonons)
    k = list(ds["material"].values).index(material)
    # the CF contiguous ragged layout, cut by hand: counts -> start and end of each material
    ends = np.cumsum(ds["path_count"].values)
    path = slice(ends[k] - ds["path_count"].values[k], ends[k])
    ends = np.cumsum(ds["dos_count"].values)
    dos = slice(ends[k] - ds["dos_count"].values[k], ends[k])
    bands = 3 * max(int(ds["n_primitive_atoms"].values[k]), 0)
    with xr.open_dataset(phonons) as lazy:
        m = pe.material(lazy, material)
        assert not lazy["band_frequency"].variable._in_memory and not lazy["dos"].variable._in_memory
    for name in ("band_frequency", "band_frequency_ref"):
        np.testing.assert_array_equal(m[name].values, ds[name].values[path, :bands])
    for name in ("band_distance", "band_segment", "band_label"):
        np.testing.assert_array_equal(m[name].values, ds[name].values[path])
    for name in ("dos_frequency", "dos", "dos_ref"):
        np.testing.assert_array_equal(m[name].values, ds[name].values[dos])
    assert m["dos"].dims == ("dos_frequency",) and m["band_frequency"].dims == ("path_point", "band")
    for name in ("entropy", "free_energy_ref", "heat_capacity", "omega_max", "omega_max_ref", "formula", "status", "error"):
        np.testing.assert_array_equal(m[name].values, ds[name].values[k])
    assert m["entropy"].dims == ("temperature",) and m["entropy"].attrs["units"] == "J/K/mol"
    assert "path_count" not in m and str(m["material"].values) == material


@pytest.mark.parametrize("material", ["Cu-m3", "Cu-none", "Cu-m4"])
def test_material_of_a_kappa_file_is_the_ragged_slice(kappa_many, material):
    ds = xr.load_dataset(kappa_many)
    assert len(set(ds["qpoint_count"].values)) == 3  # three lengths, one of them zero
    k = list(ds["material"].values).index(material)
    ends = np.cumsum(ds["qpoint_count"].values)
    q = slice(ends[k] - ds["qpoint_count"].values[k], ends[k])
    bands = 3 * max(int(ds["n_primitive_atoms"].values[k]), 0)
    with xr.open_dataset(kappa_many) as lazy:
        m = pe.material(lazy, material)
        assert not lazy["mode_kappa"].variable._in_memory
    for name in ("frequency", "frequency_ref"):
        np.testing.assert_array_equal(m[name].values, ds[name].values[q, :bands])
    for name in ("mode_kappa", "mode_kappa_ref"):
        np.testing.assert_array_equal(m[name].values, ds[name].values[:, q, :bands])
    np.testing.assert_array_equal(m["weight"].values, ds["weight"].values[q])
    np.testing.assert_array_equal(m["qpoint_coordinates"].values, ds["qpoint_coordinates"].values[q])
    for name in ("kappa", "kappa_ref", "kappa_tensor", "srme", "status", "reference_name"):
        np.testing.assert_array_equal(m[name].values, ds[name].values[k])
    assert m["kappa_tensor"].dims == ("temperature", "i", "j")


def test_an_unknown_material_names_the_closest(phonons):
    with xr.open_dataset(phonons) as ds, pytest.raises(pe.MaterialNotFoundError) as err:
        pe.material(ds, "Cu3Au")
    assert str(err.value).startswith("no material Cu3Au in ") and "closest: Cu3Au-L12" in str(err.value)


# --- the figures, from the library ---------------------------------------------------------


def test_bands_fit_the_data_and_name_the_reference(emt_phonons):
    ds = xr.load_dataset(emt_phonons)
    fig = plot_bands(ds, "Cu-fcc", "EMT model", smearing=0.2)
    ax, ax_dos = fig.axes
    low, high = ax.get_ylim()
    top = float(np.nanmax(ds["band_frequency"].values[: int(ds["path_count"][0])]))
    assert -0.05 * top < low < 0 and top < high < 1.05 * top  # stable: only a small margin below zero
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["EMT", "EMT model"]  # the record's label
    assert all((line.get_xdata() >= 0).all() for line in ax_dos.get_lines())
    # imaginary modes: the axis reaches them
    ds["band_frequency"][:5] = -2.0
    assert plot_bands(ds, "Cu-fcc").axes[0].get_ylim()[0] < -2.0


def test_smearing_keeps_the_area_of_the_dos():
    f = np.linspace(0, 10, 501)
    dos = np.exp(-0.5 * ((f - 5) / 0.05) ** 2)
    smeared = smear(f, dos, 0.5)
    assert np.trapezoid(smeared, f) == pytest.approx(np.trapezoid(dos, f), rel=1e-3)
    assert smeared.max() < 0.2 * dos.max()


def test_parity_puts_the_tables_mae_in_the_legend(phonons, emt_phonons, kappa):
    files = [xr.load_dataset(p) for p in (phonons, emt_phonons)]
    fig = plot_parity(files, ["tiny", "EMT"])
    common = common_materials(*files)
    assert common == ["Cu-fcc", "Cu3Au-L12", "CuAu-L10"]
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend[0] == f"tiny (MAE {metrics(files[0], 300.0, common)['entropy']:.3g} J/K/mol)"
    with pytest.raises(ValueError, match="not both"):
        plot_parity([files[0], xr.load_dataset(kappa)], ["a", "b"])


def test_thermo_and_kappa_figures_have_their_panels(phonons, kappa):
    fig = plot_thermo(xr.load_dataset(phonons), "CuAu-L10", "tiny")
    assert [a.get_ylabel() for a in fig.axes] == ["$S$ (J/K/mol)", "$F$ (kJ/mol)", "$C_V$ (J/K/mol)"]
    ds = xr.load_dataset(kappa)
    fig = plot_kappa(ds, "Cu-fcc", "EMT")
    mode, cumulative = fig.axes
    assert mode.get_yscale() == "log" and cumulative.get_ylabel() == "Cumulative κ (W/m-K)"
    # the cumulative curve ends at κ
    model = cumulative.get_lines()[1].get_ydata()
    assert model[-1] == pytest.approx(float(ds["kappa"].sel(temperature=300.0)[0]))
    with pytest.raises(ValueError, match="no bands"):
        plot_bands(ds, "Cu-fcc")


# --- the command ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, suffix", [("bands", "png"), ("thermo", "pdf"), ("parity", "svg"), ("parity", "png")])
def test_every_phonon_figure_writes_an_image(phonons, emt_phonons, tmp_path, kind, suffix):
    out = tmp_path / f"{kind}.{suffix}"
    args = ["plot", str(phonons), str(emt_phonons), "--kind", kind, "--out", str(out), "--dpi", "80", "--size", "6,4"]
    if kind != "parity":
        args += ["--material", "Cu3Au-L12"]
    _run(*args)
    head = out.read_bytes()[:400]
    assert out.stat().st_size > 5_000
    assert {"png": head.startswith(PNG), "pdf": head.startswith(b"%PDF"), "svg": b"<svg" in head}[suffix]


@pytest.mark.parametrize("kind", ["kappa", "parity"])
def test_every_kappa_figure_writes_an_image(kappa, tmp_path, kind):
    out = tmp_path / f"{kind}.png"
    _run("plot", str(kappa), "--kind", kind, "--out", str(out))
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 5_000


def test_a_kappa_file_plots_kappa_by_default(kappa):
    res = runner.invoke(app, ["plot", str(kappa)])
    assert res.exit_code == 0, res.output
    assert (kappa.parent / "kappa-Cu-fcc-kappa.png").read_bytes()[:8] == PNG


def test_plot_messages_say_what_to_do(phonons, kappa):
    res = runner.invoke(app, ["plot", str(kappa), "--kind", "bands"])
    assert res.exit_code == 2 and "κ results file has no bands" in res.output and "can plot: kappa, parity" in res.output
    res = runner.invoke(app, ["plot", str(phonons), "--kind", "kappa"])
    assert res.exit_code == 2 and "phonon results file has no κ" in res.output
    res = runner.invoke(app, ["plot", str(phonons), "--material", "Cu3Au"])
    assert res.exit_code == 1 and "no material Cu3Au in" in res.output and "closest: Cu3Au-L12" in res.output
    assert "'" not in res.output
    res = runner.invoke(app, ["plot", str(phonons), "--material", "Pt-fcc"])
    assert res.exit_code == 1 and "material Pt-fcc failed" in res.output and "Pt" in res.output
    res = runner.invoke(app, ["plot", str(phonons), str(kappa)])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(app, ["plot", str(phonons), "--out", "x.jpg"])
    assert res.exit_code == 2 and ".png, .pdf or .svg" in res.output
    res = runner.invoke(app, ["plot", str(phonons), "--size", "6"])
    assert res.exit_code == 2 and "--size 6" in res.output
