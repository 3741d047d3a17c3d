"""The self-supervised feature network: a small conv encoder trained on the training images alone (SimCLR-style).

On unlabelled data, or data of few classes (crops of two photos in two class folders), the domain classifier's
features separate the classes and see little else: FID on them forgives blurry colour fields that land on the right
side of the class boundary. This encoder learns, without labels, to tell every training image from every other one
(Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations": two augmented views of
an image must be nearer each other than any other image's views), so its features see the images themselves;
Morozov et al. 2021 ("On Self-Supervised Image Representations for GAN Evaluation") found such features rank GANs
more faithfully than Inception's. Its numbers are comparable between runs that share the encoder (same data
fingerprint, same settings and code), as the classifier's are.

The views are random resized crops (one affine `grid_sample`) and a mild colour jitter (brightness and contrast for
grey images). Deliberately no blur and no flips: the encoder is made blind to what it is trained invariant to, and a
yardstick must not forgive blurred or mirrored samples.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan.hashing import sha256_file
from gan.metrics.classifier import shrunk, to_float

FEATURE_DIM = 128


class Encoder(nn.Module):
    """Four conv blocks (two of them halving the side) and a global average pool to 128-d features; `features` feeds
    FID and the other feature metrics, `project` (a two-layer MLP) serves the contrastive loss in training only.
    There is no `head`: an encoder has no softmax (`classifier.embed` gives it 0 columns of probabilities)."""

    def __init__(self, image_shape: tuple[int, ...], width: int = 16, projection_dim: int = 64):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.spec = {"image_shape": self.image_shape, "width": width, "projection_dim": projection_dim}  # with the weights: all to rebuild it
        c = image_shape[0]

        def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(c, width),  # [w, H, W]
            *block(width, 2 * width, stride=2),  # [2w, H/2, W/2]
            *block(2 * width, 4 * width, stride=2),  # [4w, H/4, W/4]
            *block(4 * width, FEATURE_DIM),  # [128, H/4, W/4]
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # [128]: any image size, 8 px and up
        )
        self.project = nn.Sequential(nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.ReLU(), nn.Linear(FEATURE_DIM, projection_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] in [0, 1] -> [N, 128]
        return self.body(shrunk(x) * 2 - 1)


def crop(x: torch.Tensor, gen: torch.Generator, min_area: float = 0.4, max_ratio: float = 4 / 3) -> torch.Tensor:
    """A random resized crop of each image [N, C, H, W] (a share of the area in [min_area, 1], aspect ratio within
    max_ratio either way), read back at the full size by one affine `grid_sample`."""
    n = len(x)
    area = min_area + (1 - min_area) * torch.rand(n, generator=gen)
    ratio = torch.exp((torch.rand(n, generator=gen) * 2 - 1) * math.log(max_ratio))
    sx, sy = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # the crop's sides, as shares of the image's
    tx, ty = (1 - sx) * (torch.rand(n, generator=gen) * 2 - 1), (1 - sy) * (torch.rand(n, generator=gen) * 2 - 1)  # inside the image
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)  # [N, 2, 3]
    return F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)


def jitter(x: torch.Tensor, gen: torch.Generator, strength: float = 0.4) -> torch.Tensor:
    """Random brightness and contrast of each image [N, C, H, W] in [0, 1] and, for RGB, saturation: each factor in
    [1 - strength, 1 + strength] (SimCLR's colour jitter at half its strength, without hue)."""
    factor = lambda: 1 + (torch.rand(len(x), 1, 1, 1, generator=gen) * 2 - 1) * strength  # noqa: E731  # [N, 1, 1, 1]
    x = x * factor()  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean  # contrast, about each image's mean
    if x.shape[1] == 3:
        grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - grey) * factor() + grey  # saturation, about each pixel's luma
    return x.clamp(0, 1)


def view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One augmented view of a batch [N, C, H, W] in [0, 1]."""
    return jitter(crop(x, gen), gen)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss of projections [2B, P]: rows i and i + B are the two views of one image; each row must pick
    its partner among the other 2B - 1 by cosine similarity / temperature (a cross-entropy over them)."""
    b = len(z) // 2
    z = F.normalize(z, dim=1)
    sim = z @ z.T / temperature  # [2B, 2B]
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))  # a view is not its own partner
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(sim, partner)


def train_encoder(
    images: np.ndarray, epochs: int, seed: int, batch_size: int = 256, temperature: float = 0.2, lr: float = 2e-3, width: int = 16,
    losses: list[float] | None = None,
) -> Encoder:
    """Fit the encoder on uint8 images [N, C, H, W] with the NT-Xent loss over two views per image: AdamW with a
    one-cycle learning rate; views, order and initial weights seeded by `seed`. `losses`, when given, gets each epoch's
    mean loss."""
    torch.manual_seed(seed)
    model = Encoder(tuple(images.shape[1:]), width)
    x = torch.as_tensor(images)  # to floats a batch at a time
    steps_per_epoch = max(1, len(x) // batch_size)  # full batches only: a last batch of a few images is a far easier task
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order, total = torch.randperm(len(x), generator=gen), 0.0
        for step in range(steps_per_epoch):
            batch = to_float(x[order[step * batch_size : (step + 1) * batch_size]])
            views = torch.cat([view(batch, gen), view(batch, gen)])  # [2B, C, H, W]: both views of image i at rows i and i + B
            loss = nt_xent(model.project(model.features(views)), temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item()
        if losses is not None:
            losses.append(total / steps_per_epoch)
    return model.eval()


@torch.no_grad()
def view_accuracy(model: Encoder, images: np.ndarray, seed: int, batch_size: int = 500) -> float:
    """The encoder's own sanity check, as accuracy is the classifier's: of two seeded views of each image (held-out
    images, in batches), the share whose nearest view by cosine similarity is its partner (chance: 1 / (2B - 1))."""
    model.eval()
    gen, right, seen = torch.Generator().manual_seed(seed), 0, 0
    for chunk in torch.as_tensor(images).split(batch_size):
        if len(chunk) < 2:
            continue
        x = to_float(chunk)
        z = F.normalize(model.features(torch.cat([view(x, gen), view(x, gen)])), dim=1)
        sim = (z @ z.T).fill_diagonal_(float("-inf"))
        b = len(x)
        right += int((sim.argmax(1) == torch.cat([torch.arange(b, 2 * b), torch.arange(b)])).sum())
        seen += 2 * b
    if not seen:
        raise ValueError("encoder view accuracy over fewer than 2 images")
    return right / seen


def source_digest() -> str:
    """A hash of this module's source: the encoder's cache key changes with its own code, not with every edit to `gan`."""
    return sha256_file(__file__)[:12]
