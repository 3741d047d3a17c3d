"""The pipeline's stages, one module each, named here once: the flow runs them in this order (each module's `STEPS`),
the fault hook names its points by them and the code digests key on them (`pipelines/provenance.py`). A stage imports
no other stage; it gets what earlier stages made from the flow's run record."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STAGES = ("ingest", "train", "evaluate", "register")


def _always(_: object) -> bool:
    return True


@dataclass(frozen=True)
class Step:
    """How the flow runs one task of a stage: the run record's key for its output, the task's arguments from the config
    and the record so far (`inputs(cfg, run)`), whether a cached output still exists (else it runs again for real), and
    whether it runs at all for this config (`when(cfg)`; its output is None when not)."""

    key: str
    task: Any  # a Prefect task
    inputs: Callable[[Any, dict], tuple]
    output_exists: Callable[[Any], bool] = _always
    when: Callable[[Any], bool] = _always
