"""The pipeline's stages, one module each, named here once: the flow runs them in this order, the fault hook names its
points by them and the code digests key on them (`pipelines/provenance.py`). A stage imports no other stage."""

STAGES = ("ingest", "train", "evaluate", "register")
