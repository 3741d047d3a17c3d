"""The generator's named inputs (`gan.sampling.Inputs`), as a served model's request gives them: each input a model cannot
take is refused with one line naming it, before anything is generated; good inputs become G's (z, c)."""

import numpy as np
import pytest

from gan.latent import Latent
from gan.sampling import MAX_BATCH, Inputs

CONDITIONAL = Latent(4, num_classes=3)
INFOGAN = Latent(4, info_categorical=3, info_continuous=2)
PLAIN = Latent(4)


def parts(latent: Latent, n: int = 2, **changes: object) -> dict[str, np.ndarray]:
    """Good request parts for `latent`, n rows, with some replaced (a value of None drops that part)."""
    good = {"z": np.zeros((n, latent.z_dim), np.float32)}
    if latent.num_classes:
        good["label"] = np.arange(n, dtype=np.int64) % latent.num_classes
    if latent.info_categorical:
        good["code"] = np.arange(n, dtype=np.int64) % latent.info_categorical
    if latent.info_continuous:
        good["code_continuous"] = np.zeros((n, latent.info_continuous), np.float32)
    good.update(changes)
    return {k: v for k, v in good.items() if v is not None}


def refusal(latent: Latent, request: dict) -> str:
    with pytest.raises(ValueError) as refused:
        Inputs.from_dict(request).for_generator(latent)
    return str(refused.value)


def test_good_inputs_become_the_generators_latents_and_labels() -> None:
    z, c = Inputs.from_dict(parts(CONDITIONAL, 3)).for_generator(CONDITIONAL)
    assert z.shape == (3, 4) and c.tolist() == [0, 1, 2]
    z, c = Inputs.from_dict(parts(INFOGAN, 3)).for_generator(INFOGAN)
    assert z.shape == (3, INFOGAN.dim) and c is None
    assert Inputs.from_dict(parts(PLAIN, MAX_BATCH)).for_generator(PLAIN)[0].shape == (MAX_BATCH, 4)  # the cap itself is taken


NAN_ROW_1 = np.array([[0.0] * 4, [0.0, np.nan, 0.0, 0.0]])


@pytest.mark.parametrize(("latent", "changes", "said"), [
    (CONDITIONAL, {"z": NAN_ROW_1}, "input 'z' holds 1 non-finite values (NaN or inf; the first in row 1); expected finite numbers"),
    (CONDITIONAL, {"z": np.full((2, 4), np.inf)}, "input 'z' holds 8 non-finite values"),
    (CONDITIONAL, {"z": np.full((2, 4), 1e39)}, "input 'z' holds 8 non-finite values"),  # beyond float32: inf
    (INFOGAN, {"code_continuous": np.array([[0.0, 0.0], [np.nan, 0.0]])}, "input 'code_continuous' holds 1 non-finite values"),
    (CONDITIONAL, {"z": np.zeros((0, 4), np.float32), "label": np.zeros(0, np.int64)}, "input 'z' has shape (0, 4); expected (N, 4) with N >= 1"),
    (PLAIN, {"z": np.zeros((MAX_BATCH + 1, 4), np.float32)}, f"input 'z' has {MAX_BATCH + 1} rows; expected at most {MAX_BATCH} per request"),
    (PLAIN, {"z": np.array([["a"] * 4] * 2)}, "input 'z' holds <U1 values; expected real numbers (float32)"),
    (PLAIN, {"z": np.ones((2, 4), bool)}, "input 'z' holds bool values; expected real numbers"),
    (CONDITIONAL, {"label": np.array([0.0, 1.0])}, "input 'label' must be integers of shape (2,), got float64 (2,)"),
    (CONDITIONAL, {"label": None}, "this generator needs the input 'label'"),
    (PLAIN, {"label": np.array([1, 2])}, "input 'label' was given, but this generator takes no 'label'"),
    (INFOGAN, {"code": np.array([0, 3])}, "input 'code' holds 0..3; this generator knows 0..2"),
    (INFOGAN, {"code": np.array([-1, 0])}, "input 'code' holds -1..0; this generator knows 0..2"),
    (INFOGAN, {"code": np.array([0, 1, 2])}, "input 'code' must be integers of shape (2,), got int64 (3,)"),
    (INFOGAN, {"code_continuous": np.zeros((2, 3), np.float32)}, "input 'code_continuous' must have shape (2, 2), got (2, 3)"),
    (INFOGAN, {"code_continuous": None}, "input 'code_continuous' must have shape (2, 2), got None"),
    (CONDITIONAL, {"code": np.array([0, 1])}, "input 'code' was given, but this generator takes no 'code'"),
])
def test_inputs_a_model_cannot_take_are_refused_in_one_line_naming_the_input(latent: Latent, changes: dict, said: str) -> None:
    message = refusal(latent, parts(latent, **changes))
    assert said in message and "\n" not in message, message


def test_an_oversized_request_is_refused_before_its_parts_are_converted() -> None:
    class Unconvertible:  # a z whose rows can be counted but which fails if anything reads its values
        ndim = 2

        def __len__(self) -> int:
            return MAX_BATCH + 1

        def __array__(self, *args: object, **kwargs: object) -> np.ndarray:
            raise AssertionError("converted")

    with pytest.raises(ValueError, match="at most 4096 per request"):
        Inputs.from_dict({"z": Unconvertible()})
