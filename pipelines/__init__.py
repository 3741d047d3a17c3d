"""Orchestration: the Prefect flow and its stage tasks, the CLI, and thin adapters to Ray Train and MLflow."""
