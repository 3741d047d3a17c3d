"""The Ray Job's entry point, on the cluster: `python -m pipelines.cluster.job_main` runs the training driver with the
submitted spec (`cluster/job.py`) and prints its output as its last line; a user's mistake as a line of its own."""

import json
import os
import sys

from pipelines.cluster.fit import fit
from pipelines.cluster.job import RESULT, SPEC_ENV, USER_ERROR
from pipelines.config import PipelineConfig
from pipelines.errors import user_errors


def main() -> None:
    """On the cluster: run the driver with the submitted config, and print its output as the last line."""
    import ray  # noqa: PLC0415

    spec = json.loads(os.environ[SPEC_ENV])
    ray.init()  # joins the job's cluster with the job's runtime environment (ensure_ray's would clash with it)
    try:
        result = fit(PipelineConfig.model_validate(spec["config"]), spec["dataset_dir"], spec["run_name"], spec["lineage"], **spec["files"])
    except user_errors() as err:
        print(USER_ERROR + json.dumps({"type": type(err).__name__, "message": str(err)}), flush=True)
        sys.exit(2)
    print(RESULT + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
