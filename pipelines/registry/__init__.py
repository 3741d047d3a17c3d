"""The MLflow model registry as the pipeline uses it: the client and its tags, the promotion gate, champions moved by
hand, the yardsticks compared head to head, lineage, warm starts' parents, and the served model."""
