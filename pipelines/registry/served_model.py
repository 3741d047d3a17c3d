"""MLflow "model from code": rebuilds the generator from its config and loads a state dict.

Nothing is unpickled: the weights load with `torch.load(weights_only=True)` (`gan.saved`), and the network class
comes from the `gan` package shipped beside this file, so old versions load after refactors.
Inputs, by name: `z` float32 [N, z_dim]; `label` int64 [N] (conditional models); `code` int64 [N] and
`code_continuous` float32 [N, k] (InfoGAN models). A single array is taken as `z`. At most `gan.sampling.MAX_BATCH`
rows a request; inputs that are not finite, empty, too many or out of range are the caller's error (a 400 when served).
Output: images float32 [N, C, H, W] in [0, 1].
"""

import mlflow.models
import mlflow.pyfunc
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE


class GeneratorModel(mlflow.pyfunc.PythonModel):
    # `predict` is unannotated on purpose (see there). Without this flag MLflow checks for type hints as the class
    # is created and warns, under warning filters of its own that a caller cannot override, on every register and
    # sample; the logged signature still validates every request (the PyFuncModel's schema enforcement).
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:  # noqa: ANN001
        from gan.checkpoint import generator_of  # noqa: PLC0415 - resolved from the model's code path
        from gan.saved import load_tensors  # noqa: PLC0415

        path = context.artifacts["generator"]
        blob = load_tensors(path, path, "a generator this project registered")
        self.G, _, self.latent = generator_of(blob)

    # model_input: a dict of named arrays, or one array taken as z. Left unannotated: MLflow would read a type
    # hint as a schema of its own; the explicit signature logged with the model does the validation.
    def predict(self, context, model_input, params: dict | None = None) -> np.ndarray:  # noqa: ANN001
        from gan.sampling import Inputs, generate  # noqa: PLC0415

        parts = model_input if isinstance(model_input, dict) else {"z": np.asarray(model_input)}
        try:
            z, c = Inputs.from_dict(parts).for_generator(self.latent)
        except ValueError as err:  # the caller's inputs: a scoring server answers 400 with this reason (any other error, it hides)
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        return generate(self.G, z, c).numpy()


mlflow.models.set_model(GeneratorModel())
