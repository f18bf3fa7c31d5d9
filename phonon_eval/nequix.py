"""The Nequix architecture (Koker et al. 2025) as an equinox module built on e3nn-jax.

The model maps edge vectors of a periodic graph to per-atom energies. It is E(3)-equivariant by
construction: scalars are invariant, the l > 0 features rotate, and only the scalar channel
reaches the read-out.

The order of the array fields below is the order in which the public `.nqx` files store their
leaves, so a model built from a file's header deserialises that file directly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
from e3nn_jax._src.linear import FunctionalLinear

__all__ = ["NequixConfig", "Nequix", "bessel_basis", "polynomial_envelope"]


@dataclasses.dataclass(frozen=True)
class NequixConfig:
    """Hyperparameters of a Nequix model (the architecture part of a `.nqx` header)."""

    atomic_numbers: tuple[int, ...]
    cutoff: float = 6.0
    hidden_irreps: str = "128x0e + 64x1o + 32x2e + 32x3o"
    lmax: int = 3
    n_layers: int = 4
    radial_basis_size: int = 8
    radial_mlp_size: int = 64
    radial_mlp_layers: int = 2
    radial_polynomial_p: float = 6.0
    mlp_init_scale: float = 4.0
    index_weights: bool = False
    layer_norm: bool = True
    shift: float = 0.0
    scale: float = 1.0
    avg_n_neighbors: float = 1.0

    def __post_init__(self) -> None:
        numbers = tuple(sorted(int(z) for z in self.atomic_numbers))
        if len(set(numbers)) != len(numbers) or not numbers:
            raise ValueError(f"atomic_numbers must be distinct and non-empty, got {numbers}")
        object.__setattr__(self, "atomic_numbers", numbers)
        if self.cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {self.cutoff}")

    @property
    def n_species(self) -> int:
        return len(self.atomic_numbers)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["atomic_numbers"] = list(self.atomic_numbers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NequixConfig":
        """Build from a mapping that may carry extra (training) keys, as `.nqx` headers do."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {"atomic_numbers"} - d.keys()
        if missing:
            raise KeyError(f"model config lacks {sorted(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})


def bessel_basis(r: jax.Array, n: int, cutoff: float) -> jax.Array:
    """Radial Bessel functions sin(kπr/rc)/r · 2/rc, k = 1..n; shape (E,) -> (E, n)."""
    k = jnp.linspace(1.0, n, n) * jnp.pi
    r = r[:, None]
    # the r -> 0 limit is k/rc; padded edges and coincident atoms land there
    safe_r = jnp.where(r == 0.0, 1.0, r)
    return (2.0 / cutoff) * jnp.where(r == 0.0, k / cutoff, jnp.sin(k * r / cutoff) / safe_r)


def polynomial_envelope(r: jax.Array, cutoff: float, p: float) -> jax.Array:
    """Smooth cutoff of Klicpera et al.: 1 at r = 0, zero with p derivatives at r = cutoff."""
    x = r / cutoff
    out = (
        1.0
        - (p + 1.0) * (p + 2.0) / 2.0 * x**p
        + p * (p + 2.0) * x ** (p + 1.0)
        - p * (p + 1.0) / 2.0 * x ** (p + 2.0)
    )
    return jnp.where(x < 1.0, out, 0.0)


class RadialMLP(eqx.Module):
    """Bias-free SiLU MLP from the radial basis to one weight per tensor-product path."""

    weights: list[jax.Array]

    def __init__(self, sizes: list[int], init_scale: float, *, key: jax.Array):
        keys = jax.random.split(key, len(sizes) - 1)
        last = len(sizes) - 2
        self.weights = [
            # the last layer feeds no activation, so it keeps unit variance
            jax.random.normal(k, (n_in, n_out))
            * math.sqrt((init_scale if i < last else 1.0) / n_in)
            for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
        ]

    def __call__(self, x: jax.Array) -> jax.Array:
        for w in self.weights[:-1]:
            x = jax.nn.silu(x @ w)
        return x @ self.weights[-1]


class RMSNorm(eqx.Module):
    """Equivariant RMS norm: one scale per node from all irreps, each degree weighted equally."""

    irreps: e3nn.Irreps = eqx.field(static=True)
    weights: list[jax.Array]
    eps: float = eqx.field(static=True, default=1e-12)

    def __init__(self, irreps: e3nn.Irreps, eps: float = 1e-12):
        self.irreps = e3nn.Irreps(irreps)
        self.weights = [jnp.ones(mul) for mul, _ in self.irreps]
        self.eps = eps

    def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        n = len(self.irreps)
        # summed over channels and averaged over components, as the public weights were trained
        ms = sum(
            (chunk**2).sum(axis=-2).mean(axis=-1) / (ir.dim * n)
            for (_, ir), chunk in zip(self.irreps, x.chunks)
        )
        inv = jax.lax.rsqrt(ms + self.eps)[..., None, None]
        chunks = [chunk * w[:, None] * inv for w, chunk in zip(self.weights, x.chunks)]
        return e3nn.from_chunks(self.irreps, chunks, x.shape[:-1], x.dtype)


class _ValueEqualLinear(FunctionalLinear):
    """e3nn's linear map plan, equal to another when its irreps and paths are.

    e3nn-jax keeps it as a static field of every `e3nn.equinox.Linear` and compares it by
    identity, so an unpickled or rebuilt copy of the model (a Dask worker's, a reloaded
    checkpoint's) had a different tree structure from the original and every `filter_jit`
    traced and compiled again for it. The plan is a pure function of these three fields.
    """

    def _key(self) -> tuple:
        return (self.irreps_in, self.irreps_out, tuple(self.instructions))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _linear(**kwargs: Any) -> e3nn.equinox.Linear:
    """`e3nn.equinox.Linear` whose static plan compares by value (`_ValueEqualLinear`)."""
    layer = e3nn.equinox.Linear(**kwargs)
    plan = _ValueEqualLinear.__new__(_ValueEqualLinear)
    plan.__dict__.update(layer._linear.__dict__)
    object.__setattr__(layer, "_linear", plan)  # a fresh, unshared module: set once, before any use
    return layer


class Interaction(eqx.Module):
    """One message-passing layer: linear, edge tensor product with radial weights, skip, gate."""

    tp_irreps: e3nn.Irreps = eqx.field(static=True)
    avg_n_neighbors: float = eqx.field(static=True)
    index_weights: bool = eqx.field(static=True)

    radial: RadialMLP
    linear_in: e3nn.equinox.Linear
    linear_out: e3nn.equinox.Linear
    skip: e3nn.equinox.Linear
    norm: RMSNorm | None

    def __init__(
        self,
        irreps_in: e3nn.Irreps,
        irreps_out: e3nn.Irreps,
        config: NequixConfig,
        *,
        key: jax.Array,
    ):
        sh_irreps = e3nn.s2_irreps(config.lmax)
        # "uvu" paths: every input channel times every harmonic, kept where the output allows it
        paths = [
            (mul, ir)
            for mul, ir_in in irreps_in
            for _, ir_sh in sh_irreps
            for ir in ir_in * ir_sh
            if ir in irreps_out
        ]
        self.tp_irreps = e3nn.Irreps(paths)
        self.avg_n_neighbors = config.avg_n_neighbors
        self.index_weights = config.index_weights

        # the gate needs one extra scalar per non-scalar output irrep
        n_gates = irreps_out.num_irreps - irreps_out.count("0e")
        gated_irreps = (irreps_out + e3nn.Irreps(f"{n_gates}x0e")).regroup()

        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.radial = RadialMLP(
            [config.radial_basis_size]
            + [config.radial_mlp_size] * config.radial_mlp_layers
            + [self.tp_irreps.num_irreps],
            config.mlp_init_scale,
            key=k2,
        )
        self.linear_in = _linear(irreps_in=irreps_in, irreps_out=irreps_in, key=k1)
        self.linear_out = _linear(
            irreps_in=self.tp_irreps.sort().irreps, irreps_out=gated_irreps, key=k3
        )
        self.skip = _linear(
            irreps_in=irreps_in,
            irreps_out=gated_irreps,
            linear_type="indexed" if config.index_weights else "vanilla",
            num_indexed_weights=config.n_species if config.index_weights else None,
            force_irreps_out=True,
            key=k4,
        )
        self.norm = RMSNorm(gated_irreps) if config.layer_norm else None

    def __call__(
        self,
        features: e3nn.IrrepsArray,
        species: jax.Array,
        sh: e3nn.IrrepsArray,
        radial_basis: jax.Array,
        senders: jax.Array,
        receivers: jax.Array,
    ) -> e3nn.IrrepsArray:
        x = self.linear_in(features)[senders]
        x = e3nn.tensor_product(x, sh, filter_ir_out=self.tp_irreps)
        x = x * jax.vmap(self.radial)(radial_basis)
        x = e3nn.scatter_sum(x, dst=receivers, output_size=features.shape[0])
        x = x / jnp.sqrt(self.avg_n_neighbors)
        skip = self.skip(species, features) if self.index_weights else self.skip(features)
        x = self.linear_out(x) + skip
        if self.norm is not None:
            x = self.norm(x)
        return e3nn.gate(x, even_act=jax.nn.silu, odd_act=jax.nn.tanh, even_gate_act=jax.nn.silu)


class Nequix(eqx.Module):
    """Nequix: species and edge vectors in, per-atom energies (eV) out."""

    config: NequixConfig = eqx.field(static=True)
    atom_energies: jax.Array
    layers: list[Interaction]
    readout: e3nn.equinox.Linear

    def __init__(self, config: NequixConfig, *, key: jax.Array):
        self.config = config
        self.atom_energies = jnp.zeros(config.n_species, dtype=jnp.float32)
        hidden = e3nn.Irreps(config.hidden_irreps)
        keys = jax.random.split(key, config.n_layers + 1)
        irreps_in = e3nn.Irreps(f"{config.n_species}x0e")
        self.layers = []
        for i in range(config.n_layers):
            # the last layer only feeds the scalar read-out
            irreps_out = hidden if i < config.n_layers - 1 else hidden.filter("0e")
            self.layers.append(Interaction(irreps_in, irreps_out, config, key=keys[i + 1]))
            irreps_in = hidden
        self.readout = _linear(
            irreps_in=hidden.filter("0e"), irreps_out="0e", key=keys[0]
        )

    def node_energies(
        self,
        vectors: jax.Array,
        species: jax.Array,
        senders: jax.Array,
        receivers: jax.Array,
    ) -> jax.Array:
        """Per-atom energies.

        Args:
            vectors: (E, 3) edge vectors r_sender - r_receiver (Å); padded edges lie beyond the cutoff.
            species: (N,) species indices into `config.atomic_numbers`.
            senders, receivers: (E,) node indices of each edge.

        Returns:
            (N,) energies in eV, including the per-species reference energies.
        """
        c = self.config
        features = e3nn.IrrepsArray(
            f"{c.n_species}x0e", jax.nn.one_hot(species, c.n_species, dtype=vectors.dtype)
        )
        r2 = jnp.sum(vectors**2, axis=-1)
        # a zero vector would give a NaN gradient through sqrt
        r = jnp.where(r2 == 0.0, 0.0, jnp.sqrt(jnp.where(r2 == 0.0, 1.0, r2)))
        radial_basis = (
            bessel_basis(r, c.radial_basis_size, c.cutoff)
            * polynomial_envelope(r, c.cutoff, c.radial_polynomial_p)[:, None]
        )
        sh = e3nn.spherical_harmonics(
            e3nn.s2_irreps(c.lmax), vectors, normalize=True, normalization="component"
        )
        for layer in self.layers:
            features = layer(features, species, sh, radial_basis, senders, receivers)
        energies = self.readout(features).array[:, 0] * c.scale + c.shift
        return energies + jax.lax.stop_gradient(self.atom_energies)[species]
