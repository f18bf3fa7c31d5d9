"""model.ckpt: exact round trip, .nqx conversion, and clear refusals of bad files."""

from __future__ import annotations

import io
import json

import equinox as eqx
import jax
import numpy as np
import pytest
from typer.testing import CliRunner

import phonon_eval as pe
from cli.eval import app
from conftest import shared_file

SMALL = pe.NequixConfig(
    atomic_numbers=(14, 8),
    cutoff=3.5,
    hidden_irreps="4x0e + 2x1o",
    lmax=1,
    n_layers=2,
    radial_basis_size=4,
    radial_mlp_size=8,
    shift=0.25,
    scale=1.5,
    avg_n_neighbors=8.0,
)


@pytest.fixture
def small_potential():
    model = pe.Nequix(SMALL, key=jax.random.key(3))
    return pe.Potential(model=model, atomic_numbers=SMALL.atomic_numbers, cutoff=SMALL.cutoff)


def _leaves(potential):
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, potential.model)
    return buf.getvalue()


def test_round_trip_is_bit_exact(tmp_path, small_potential):
    path = tmp_path / "model.ckpt"
    pe.save_potential(path, small_potential, {"note": "test"})
    loaded = pe.load_potential(path)
    assert loaded.model.config == small_potential.model.config
    assert loaded.atomic_numbers == (8, 14)
    assert _leaves(loaded) == _leaves(small_potential)
    for a, b in zip(jax.tree.leaves(loaded.model), jax.tree.leaves(small_potential.model)):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    header = pe.checkpoint.read_header(path)
    assert header["format"] == "pft-ckpt" and header["format_version"] == 1
    assert header["provenance"]["note"] == "test"
    # saving what was loaded gives the same parameters byte for byte
    again = tmp_path / "again.ckpt"
    pe.save_potential(again, loaded)
    assert path.read_bytes().partition(b"\n")[2] == again.read_bytes().partition(b"\n")[2]


def test_nqx_converts_to_ckpt_with_identical_parameters(tmp_path):
    src = shared_file("models/nequix-mp-1.nqx")
    dst = tmp_path / "mp1.ckpt"
    original = pe.convert(src, dst)
    converted = pe.load_potential(dst)
    assert _leaves(converted) == _leaves(original)
    assert converted.model.config == original.model.config
    assert converted.cutoff == 6.0 and len(converted.atomic_numbers) == 89
    header = pe.checkpoint.read_header(dst)
    assert header["provenance"]["parent_sha256"] == original.sha256
    assert "learning_rate" in header["provenance"]["training_config"]


def test_missing_file(tmp_path):
    with pytest.raises(pe.CheckpointError, match="no such checkpoint"):
        pe.load_potential(tmp_path / "nope.ckpt")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "junk.ckpt"
    p.write_bytes(b"\x00\x01binary garbage\n")
    with pytest.raises(pe.CheckpointError, match="not a JSON header"):
        pe.load_potential(p)


def test_truncated_checkpoint(tmp_path, small_potential):
    p = tmp_path / "m.ckpt"
    pe.save_potential(p, small_potential)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])
    with pytest.raises(pe.CheckpointError, match="truncated or corrupt"):
        pe.load_potential(p)


def test_corrupt_checkpoint(tmp_path, small_potential):
    p = tmp_path / "m.ckpt"
    pe.save_potential(p, small_potential)
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside the last parameter
    p.write_bytes(bytes(data))
    with pytest.raises(pe.CheckpointError, match="checksum"):
        pe.load_potential(p)


def test_truncated_nqx(tmp_path):
    data = shared_file("models/nequix-mp-1.nqx").read_bytes()
    p = tmp_path / "cut.nqx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(pe.CheckpointError, match="truncated or corrupt"):
        pe.load_potential(p)


def test_leaves_left_over_are_refused(tmp_path, small_potential):
    """Without a checksum (the public .nqx files have none) the leaves of a larger architecture
    can deserialise into the header's one and leave bytes over: refused. A final newline, as the
    public files end, is not."""
    p = tmp_path / "m.ckpt"
    pe.save_potential(p, small_potential)
    header, _, body = p.read_bytes().partition(b"\n")
    h = json.loads(header)
    del h["leaves_sha256"]
    extra = io.BytesIO()
    np.save(extra, np.ones(4, np.float32))
    p.write_bytes(json.dumps(h).encode() + b"\n" + body + b"\n")
    pe.load_potential(p)
    p.write_bytes(json.dumps(h).encode() + b"\n" + body + extra.getvalue())
    with pytest.raises(pe.CheckpointError, match="do not fit the architecture in the header"):
        pe.load_potential(p)


def test_unknown_format_version(tmp_path, small_potential):
    p = tmp_path / "m.ckpt"
    pe.save_potential(p, small_potential)
    header, _, body = p.read_bytes().partition(b"\n")
    h = json.loads(header)
    h["format_version"] = 99
    p.write_bytes(json.dumps(h).encode() + b"\n" + body)
    with pytest.raises(pe.CheckpointError, match="format_version 99"):
        pe.load_potential(p)


def test_cli_convert_and_info(tmp_path):
    src = shared_file("models/nequix-mp-1-pft.nqx")
    dst = tmp_path / "pft.ckpt"
    runner = CliRunner()
    res = runner.invoke(app, ["convert", str(src), str(dst)])
    assert res.exit_code == 0, res.output
    assert dst.is_file()
    res = runner.invoke(app, ["info", str(dst)])
    assert res.exit_code == 0, res.output
    assert "128x0e + 64x1o + 32x2e + 32x3o" in res.output


def test_cli_reports_a_bad_model_in_one_line(tmp_path):
    res = CliRunner().invoke(app, ["info", str(tmp_path / "missing.ckpt")])
    assert res.exit_code == 1
    assert "no such checkpoint" in res.output
