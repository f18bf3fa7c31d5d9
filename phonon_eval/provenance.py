"""What decides the numbers, as netCDF attributes: the settings and the software versions."""

from __future__ import annotations

import dataclasses
import platform
from typing import Any, ClassVar

import numpy as np

__all__ = ["ProtocolSettings", "protocol_caption", "reference_names", "settings_attrs", "software_versions"]


class ProtocolSettings:
    """What a settings dataclass with named protocols shares (mixed into the evaluators' settings).

    A protocol is a named, versioned set of every setting: `PROTOCOLS[name]` holds the fields in
    which it differs from the dataclass defaults (the default protocol's values). Each instance
    records in `overrides` the fields in which it differs from the protocol it names.
    """

    PROTOCOLS: ClassVar[dict[str, dict[str, Any]]]
    PROTOCOL_VERSION: ClassVar[int]
    COMMAND: ClassVar[str]

    def _record_overrides(self) -> None:
        if self.protocol not in self.PROTOCOLS:  # type: ignore[attr-defined]
            raise ValueError(f"unknown protocol {self.protocol!r}: {self.COMMAND} knows {', '.join(self.PROTOCOLS)}")  # type: ignore[attr-defined]
        base = self.PROTOCOLS[self.protocol]  # type: ignore[attr-defined]
        changed = tuple(
            f.name for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.name not in ("protocol", "overrides") and getattr(self, f.name) != base.get(f.name, f.default)
        )
        object.__setattr__(self, "overrides", changed)

    @classmethod
    def from_protocol(cls, name: str, **changes: Any) -> Any:
        """The settings of protocol `name`, with `changes` (recorded as overrides)."""
        if name not in cls.PROTOCOLS:
            raise ValueError(f"unknown protocol {name!r}: {cls.COMMAND} knows {', '.join(cls.PROTOCOLS)}")
        return cls(protocol=name, **{**cls.PROTOCOLS[name], **changes})  # type: ignore[call-arg]

    def as_attrs(self) -> dict[str, Any]:
        """Flat netCDF-friendly attributes, prefixed `setting_`, with the protocol's version."""
        return {**settings_attrs(self), "setting_protocol_version": self.PROTOCOL_VERSION}


def settings_attrs(settings: Any) -> dict[str, Any]:
    """A settings dataclass as netCDF attributes `setting_<field>` (bools as 0/1, None as "none",
    tuples of names as one comma-separated string)."""
    out = {}
    for key, value in dataclasses.asdict(settings).items():
        if value is None:
            value = "none"
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            value = ", ".join(value)  # names (the overrides): one string, "" for none
        elif isinstance(value, tuple):
            value = np.asarray(value)
        out[f"setting_{key}"] = value
    return out


def software_versions() -> dict[str, str]:
    """Versions of everything that decides the numbers, for the results' `source` attribute."""
    import jax
    import phono3py
    import phonopy
    import spglib
    import xarray as xr

    import phonon_eval

    return {
        "pft-toolkit": phonon_eval.__version__,
        "phonopy": phonopy.__version__,
        "phono3py": phono3py.__version__,
        "spglib": spglib.__version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "xarray": xr.__version__,
        "python": platform.python_version(),
    }


def protocol_caption(attrs: dict[str, Any]) -> str:
    """'protocol mdr v1' and the settings that override it, from a results file's attributes."""
    name = attrs.get("setting_protocol")
    if not name:
        return "no named protocol"
    overrides = str(attrs.get("setting_overrides", ""))
    text = f"protocol {name} v{attrs.get('setting_protocol_version', '?')}"
    return f"{text}, overridden: {overrides}" if overrides else text


def reference_names(results: Any) -> str:
    """What a results Dataset was compared with: the labels of its materials' references, e.g.
    "MDR PBE" or "DFT, EMT" ("reference" when none is named, as in files older than the label)."""
    names = results["reference_name"].values if "reference_name" in results else []
    return ", ".join(sorted({str(n) for n in names if n})) or "reference"
