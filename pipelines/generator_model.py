"""MLflow "model from code": rebuilds the generator from its config and loads a state dict.

Nothing is unpickled: the weights load with `torch.load(weights_only=True)`, and the network class
comes from the `gan` package shipped beside this file, so old versions load after refactors.
Input: latents float32 [N, z_dim]. Output: images float32 [N, C, H, W] in [0, 1].
"""

import mlflow.models
import mlflow.pyfunc
import numpy as np
import torch


class GeneratorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:  # noqa: ANN001
        from gan.config import ModelConfig  # noqa: PLC0415 - resolved from the model's code path
        from gan.networks import build_generator  # noqa: PLC0415

        blob = torch.load(context.artifacts["generator"], map_location="cpu", weights_only=True)
        self.G = build_generator(ModelConfig.model_validate_json(blob["model_json"]), tuple(blob["image_shape"]))
        self.G.load_state_dict(blob["state"])
        self.G.eval()

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:  # noqa: ANN001
        from gan.training_loop import generate  # noqa: PLC0415

        z = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        return generate(self.G, z).numpy()


mlflow.models.set_model(GeneratorModel())
