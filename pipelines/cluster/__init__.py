"""Ray: the training driver and its workers, the Ray Job that runs the driver on a cluster, distributed embedding, and the
rules for starting or joining Ray. Imports neither Prefect nor MLflow: every Ray worker process imports these modules."""
