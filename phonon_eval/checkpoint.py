"""Checkpoints: the project's `model.ckpt` and the public Nequix `.nqx` files.

Both are one JSON line followed by the model's array leaves as equinox serialises them
(`tree_serialise_leaves`): rebuild the empty model from the header, then load the leaves.

`.ckpt` header: {"format": "pft-ckpt", "format_version": 1, "architecture": "nequix",
"config": {...}, "provenance": {...}, "leaves_sha256": "..."}. The checksum covers the bytes
after the header, so a truncated or corrupted file is refused with a clear message.
`.nqx` header: the public package's training config, which holds the architecture keys.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from phonon_eval.atomic import atomic_write
from phonon_eval.nequix import Nequix, NequixConfig
from phonon_eval.potential import Potential

__all__ = [
    "CheckpointError",
    "FORMAT_VERSION",
    "load_potential",
    "save_potential",
    "read_header",
    "convert",
]

FORMAT = "pft-ckpt"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: missing, truncated, corrupt or of unknown format."""


def _split(path: Path) -> tuple[dict[str, Any], bytes]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    raw = path.read_bytes()
    line, sep, body = raw.partition(b"\n")
    try:
        header = json.loads(line.decode())
        if not isinstance(header, dict) or not sep:
            raise ValueError
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"{path}: the first line is not a JSON header; not a checkpoint") from None
    return header, body


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a `.ckpt` or `.nqx` file."""
    return _split(Path(path))[0]


def _config_of(header: dict[str, Any], path: Path) -> NequixConfig:
    if header.get("format") == FORMAT:
        version = header.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: format_version {version} is not supported (this is {FORMAT_VERSION})")
        if header.get("architecture") != "nequix":
            raise CheckpointError(f"{path}: unknown architecture {header.get('architecture')!r}")
        d = header.get("config")
    else:
        d = header  # a public .nqx: the training config carries the architecture
    try:
        return NequixConfig.from_dict(d)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: header field 'config' is invalid: {err}") from None


def load_potential(path: str | os.PathLike) -> Potential:
    """Load a `.ckpt` or `.nqx` file as a Potential."""
    path = Path(path)
    header, body = _split(path)
    config = _config_of(header, path)
    expected = header.get("leaves_sha256")
    if expected is not None and hashlib.sha256(body).hexdigest() != expected:
        raise CheckpointError(f"{path}: parameters do not match their checksum (truncated or corrupt file)")
    # shapes only: materialising a random initialisation first would cost seconds
    like = eqx.filter_eval_shape(Nequix, config, key=jax.random.key(0))
    stream = io.BytesIO(body)
    try:
        model = eqx.tree_deserialise_leaves(stream, like, filter_spec=_as_in_like)
    except Exception as err:  # numpy raises several kinds for a short or mangled stream
        raise CheckpointError(f"{path}: cannot read the parameters ({type(err).__name__}: {err}); truncated or corrupt file") from None
    # the public files end with a newline after the leaves; anything else left over is foreign
    if body[stream.tell() :].strip():
        # the leaves of a different architecture can deserialise without error and leave bytes over
        raise CheckpointError(f"{path}: parameters do not fit the architecture in the header")
    return Potential(
        model=model,
        atomic_numbers=config.atomic_numbers,
        cutoff=float(config.cutoff),
        source=str(path),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )


def _as_in_like(f: io.BytesIO, x: Any) -> Any:
    """A leaf read in the dtype of the model being built: a float32 file in JAX's x64 mode (where
    the model's fresh leaves are float64) loads exactly instead of being refused."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return jnp.asarray(np.load(f), x.dtype)
    return eqx.default_deserialise_filter_spec(f, x)


def _serialise(model: eqx.Module) -> bytes:
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, model)
    return buf.getvalue()


def save_potential(
    path: str | os.PathLike, potential: Potential, provenance: dict[str, Any] | None = None
) -> None:
    """Write `potential` as a `.ckpt` file, atomically."""
    from phonon_eval import __version__

    body = _serialise(potential.model)
    prov = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "toolkit_version": __version__,
        "parent": potential.source or None,
        "parent_sha256": potential.sha256 or None,
    }
    prov.update(provenance or {})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": "nequix",
        "config": potential.model.config.to_dict(),
        "provenance": prov,
        "leaves_sha256": hashlib.sha256(body).hexdigest(),
    }
    atomic_write(path, json.dumps(header).encode() + b"\n" + body)


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> Potential:
    """Convert a `.nqx` (or `.ckpt`) file into a `.ckpt` file; returns the loaded potential."""
    potential = load_potential(src)
    header = read_header(src)
    training = {k: v for k, v in header.items() if k not in NequixConfig.__dataclass_fields__}
    save_potential(dst, potential, {"converted_from": str(src), "training_config": training})
    return potential
