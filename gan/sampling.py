"""Generator inputs as a user names them (noise, label, InfoGAN codes), and the latent layouts of the standard pictures.

A served model takes these parts by name; `Inputs.for_generator` assembles G's (z, c).
"""

from dataclasses import dataclass

import numpy as np
import torch

from gan.latent import Latent

MAX_BATCH = 4096  # rows a request may ask for: a served model answers at most this many images at once (memory stays bounded)


@dataclass
class Inputs:
    """Named generator inputs: noise [N, z_dim] float32, label [N] int64, code [N] int64, code_continuous [N, k] float32."""

    noise: np.ndarray
    label: np.ndarray | None = None
    code: np.ndarray | None = None
    code_continuous: np.ndarray | None = None

    def as_dict(self) -> dict[str, np.ndarray]:
        """The non-empty parts, keyed as the served model's input schema names them ('z' for the noise)."""
        parts = {"z": self.noise, "label": self.label, "code": self.code, "code_continuous": self.code_continuous}
        return {k: v for k, v in parts.items() if v is not None}

    @classmethod
    def from_dict(cls, parts: dict[str, np.ndarray], max_rows: int = MAX_BATCH) -> "Inputs":
        """A request's parts by name; more than `max_rows` rows is refused here, before anything is converted or generated."""
        if "z" not in parts:
            raise ValueError(f"generator inputs {sorted(parts)}: 'z' (noise, float32 [N, z_dim]) is missing")
        rows = len(parts["z"]) if np.ndim(parts["z"]) else 0
        if rows > max_rows:
            raise ValueError(f"input 'z' has {rows} rows; expected at most {max_rows} per request (split the batch)")
        return cls(parts["z"], parts.get("label"), parts.get("code"), parts.get("code_continuous"))

    def for_generator(self, latent: Latent) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(z [N, latent.dim], c [N] or None), checking each input: present if the model needs it and absent if it takes
        none, N >= 1 long, of the right shape and kind, finite, in range."""
        noise = _finite("z", self.noise)
        if noise.ndim != 2 or noise.shape[1] != latent.z_dim or not len(noise):
            raise ValueError(f"input 'z' has shape {noise.shape}; expected (N, {latent.z_dim}) with N >= 1")
        n = len(noise)
        label = _checked("label", self.label, latent.num_classes, n)
        code = _checked("code", self.code, latent.info_categorical, n)
        cont = None
        if latent.info_continuous or self.code_continuous is not None:
            if self.code_continuous is None or np.shape(self.code_continuous) != (n, latent.info_continuous):
                raise ValueError(f"input 'code_continuous' must have shape ({n}, {latent.info_continuous}), got "
                                 f"{None if self.code_continuous is None else np.shape(self.code_continuous)}")
            cont = torch.as_tensor(_finite("code_continuous", self.code_continuous))
        return latent.with_codes(torch.as_tensor(noise), code, cont), label

    def generate(self, G: torch.nn.Module, latent: Latent) -> torch.Tensor:
        """G's images [N, C, H, W] for these inputs."""
        return generate(G, *self.for_generator(latent))


def _finite(name: str, values: np.ndarray) -> np.ndarray:
    """A real-valued input as float32, refused if it holds anything else (strings, booleans) or a NaN or infinity:
    G would answer those with NaN images, or saturated ones, and no error."""
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise ValueError(f"input {name!r} holds {values.dtype} values; expected real numbers (float32)")
    with np.errstate(over="ignore"):
        values = values.astype(np.float32)  # beyond float32's range: inf, refused below
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"input {name!r} holds {int(bad.sum())} non-finite values (NaN or inf; the first in row {row}); expected finite numbers")
    return values


def _checked(name: str, values: np.ndarray | None, classes: int, n: int) -> torch.Tensor | None:
    """A class-index input as int64 [n], or None when the model takes none; a clear error otherwise."""
    if not classes:
        if values is not None:
            raise ValueError(f"input {name!r} was given, but this generator takes no {name!r}")
        return None
    if values is None:
        raise ValueError(f"this generator needs the input {name!r} (int64 [N], values 0..{classes - 1})")
    values = np.asarray(values)
    if values.shape != (n,) or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"input {name!r} must be integers of shape ({n},), got {values.dtype} {values.shape}")
    if values.min() < 0 or values.max() >= classes:
        raise ValueError(f"input {name!r} holds {int(values.min())}..{int(values.max())}; this generator knows 0..{classes - 1}")
    return torch.as_tensor(values.astype(np.int64))


@torch.no_grad()
def generate(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor | None = None, batch_size: int = 500) -> torch.Tensor:
    """Images [N, ...] from latents [N, dim] (and labels [N]), in eval mode, in chunks."""
    was_training = G.training
    G.eval()
    chunks = z.split(batch_size)
    labels = c.split(batch_size) if c is not None else [None] * len(chunks)
    out = torch.cat([G(zc, cc) for zc, cc in zip(chunks, labels)])
    G.train(was_training)
    return out


def fixed_latents(seed: int, count: int, latent: Latent) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The latent batch every training sample grid is drawn from, the same on every rank and every resume.

    Conditional and InfoGAN models show every class (or categorical code), in order."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.arange(count) * max(latent.num_classes or latent.info_categorical, 1) // count  # every class, in order
    noise = torch.randn(count, latent.z_dim, generator=gen)
    cont = torch.rand(count, latent.info_continuous, generator=gen) * 2 - 1
    return latent.with_codes(noise, rows, cont), (rows if latent.num_classes else None)


def random_inputs(latent: Latent, n: int, seed: int, label: int | None = None, class_probs: np.ndarray | None = None) -> Inputs:
    """n random inputs: labels fixed to `label`, else drawn from `class_probs` (uniform by default); random codes."""
    rng = np.random.default_rng(seed)
    inputs = Inputs(rng.standard_normal((n, latent.z_dim)).astype(np.float32))
    if latent.num_classes:
        inputs.label = np.full(n, label, np.int64) if label is not None else rng.choice(latent.num_classes, n, p=class_probs).astype(np.int64)
    if latent.info_categorical:
        inputs.code = rng.integers(0, latent.info_categorical, n).astype(np.int64)
    if latent.info_continuous:
        inputs.code_continuous = rng.uniform(-1, 1, (n, latent.info_continuous)).astype(np.float32)
    return inputs


def per_class_inputs(latent: Latent, per_row: int, seed: int) -> Inputs:
    """One row per class (conditional) or per categorical code (InfoGAN), `per_row` random samples each."""
    rows = latent.num_classes or latent.info_categorical
    assert rows, "per-class rows need a conditional or InfoGAN model"
    inputs = random_inputs(latent, rows * per_row, seed)
    kind = "label" if latent.num_classes else "code"
    setattr(inputs, kind, np.repeat(np.arange(rows, dtype=np.int64), per_row))
    return inputs


def code_sweep_inputs(latent: Latent, columns: int, seed: int, continuous_index: int = 0, span: float = 2.0) -> Inputs:
    """The classic InfoGAN figure: rows vary the categorical code, columns one continuous code from -span to span
    (training saw [-1, 1]); the noise and the other continuous codes are the same in every cell."""
    assert latent.info_categorical and latent.info_continuous > continuous_index, "a code sweep needs categorical and continuous codes"
    rows = latent.info_categorical
    noise = np.random.default_rng(seed).standard_normal((1, latent.z_dim)).astype(np.float32)
    cont = np.zeros((rows * columns, latent.info_continuous), np.float32)
    cont[:, continuous_index] = np.tile(np.linspace(-span, span, columns, dtype=np.float32), rows)
    return Inputs(np.repeat(noise, rows * columns, 0), code=np.repeat(np.arange(rows, dtype=np.int64), columns), code_continuous=cont)
