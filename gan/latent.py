"""What a generator takes: noise z, InfoGAN codes appended to it, and a class label c for conditional models."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gan.config import ModelConfig


@dataclass(frozen=True)
class Latent:
    """The generator's inputs. G(z, c): z [N, dim] = [noise | one-hot categorical code | continuous codes], c [N] or None."""

    z_dim: int
    num_classes: int = 0  # class input c; 0 = unconditional
    info_categorical: int = 0
    info_continuous: int = 0

    @classmethod
    def of(cls, model: ModelConfig, num_classes: int) -> "Latent":
        return cls(model.z_dim, num_classes if model.conditional else 0, model.info_categorical, model.info_continuous)

    @property
    def dim(self) -> int:
        """Width of G's latent input z."""
        return self.z_dim + self.info_categorical + self.info_continuous

    @property
    def code_dim(self) -> int:
        """Width of the InfoGAN Q head's output: categorical logits, then continuous means."""
        return self.info_categorical + self.info_continuous

    def sample(
        self, n: int, gen: torch.Generator | None = None, device: torch.device | str = "cpu", labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(z [n, dim], c [n] int64 or None). Conditional models use `labels` if given, else uniform classes."""
        noise = torch.randn(n, self.z_dim, generator=gen, device=device)
        cat = torch.randint(0, max(self.info_categorical, 1), (n,), generator=gen, device=device)
        cont = torch.rand(n, self.info_continuous, generator=gen, device=device) * 2 - 1
        z = self.with_codes(noise, cat, cont)
        if not self.num_classes:
            return z, None
        c = labels if labels is not None else torch.randint(0, self.num_classes, (n,), generator=gen, device=device)
        return z, c.to(device)

    def with_codes(self, noise: torch.Tensor, categorical: torch.Tensor | None = None, continuous: torch.Tensor | None = None) -> torch.Tensor:
        """Noise [N, z_dim] + code index [N] + continuous codes [N, k] -> z [N, dim]."""
        parts = [noise]
        if self.info_categorical:
            parts.append(F.one_hot(categorical.long(), self.info_categorical).to(noise.dtype))
        if self.info_continuous:
            parts.append(continuous.to(noise.dtype))
        return torch.cat(parts, 1)

    def codes(self, z: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The InfoGAN codes inside z: (categorical index [N] or None, continuous [N, k] or None)."""
        cat = z[:, self.z_dim : self.z_dim + self.info_categorical].argmax(1) if self.info_categorical else None
        cont = z[:, self.z_dim + self.info_categorical :] if self.info_continuous else None
        return cat, cont
