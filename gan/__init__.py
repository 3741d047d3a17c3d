"""GAN library: data, networks, losses, the training loop and metrics. Knows nothing of Prefect or MLflow."""

__version__ = "0.1.0"
