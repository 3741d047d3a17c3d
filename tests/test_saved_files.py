"""Nothing is unpickled: every file of tensors or arrays that users or caches hand in (a checkpoint, the quick-FID file,
the feature classifier and feature caches, a yardstick bundle, Inception weights, a registered model's weights) is read
by `gan.saved`, which runs no code a pickle names and refuses a pickle payload, a truncated or a foreign file with an
error naming the file, never torch's advice to load it unsafely. A walk over the code keeps it so."""

import ast
import io
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from gan import checkpoint
from gan.metrics import inception
from gan.metrics.quick_fid import QuickFID
from gan.saved import ForeignFile, load_array, load_tensors

ROOT = Path(__file__).resolve().parents[1]
ADVICE = "weights_only"  # torch's own message advises re-running torch.load with weights_only=False


class Payload:
    """Unpickled, it would make the folder `marker`: proof that it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def torch_bytes(value: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def payload(marker: Path) -> bytes:
    """A file laid out as torch.save writes, whose pickle names os.mkdir."""
    return torch_bytes({"format_version": checkpoint.FORMAT_VERSION, "G": Payload(marker)})


GOOD = torch_bytes({"w": torch.arange(6.0), "step": 3, "config_json": "{}"})
# (id, bytes of the file given the marker's path, what the message says)
BAD_FILES = [
    ("pickle payload", payload, "it names Python objects beyond tensors and plain values, which could run code; nothing was loaded"),
    ("truncated", lambda _: GOOD[: len(GOOD) // 2], "truncated or corrupt"),
    ("cut at the start", lambda _: GOOD[:2], "truncated or corrupt"),
    ("empty", lambda _: b"", "empty (0 bytes)"),
    ("text", lambda _: b"not a checkpoint\n", "another program's file"),
    ("plain pickle", lambda m: __import__("pickle").dumps({"G": Payload(m)}), "another program's file"),
    ("plain pickle, protocol 2", lambda m: __import__("pickle").dumps({"G": Payload(m)}, protocol=2), "could run code"),
    ("a list of tensors", lambda _: torch_bytes([torch.zeros(2)]), "it holds a list, not a dict of tensors"),
]


def refused(call, path: Path, marker: Path, error: type[Exception], said: str) -> str:  # noqa: ANN001
    """Call `call(path)`: it raises `error` in one line naming the file and saying `said`, never torch's advice; nothing ran."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(error) as err:
            call(path)
    message = str(err.value)
    assert said in message and "\n" not in message and ADVICE not in message, message
    assert not marker.exists(), "the pickle's payload ran"
    assert not [w for w in caught if "pickle" in str(w.message)], [str(w.message) for w in caught]  # torch's note on protocols
    return message


@pytest.mark.parametrize(("make", "said"), [row[1:] for row in BAD_FILES], ids=[row[0] for row in BAD_FILES])
def test_a_checkpoint_that_is_not_ours_is_refused_naming_its_state_file(tmp_path: Path, make, said: str) -> None:  # noqa: ANN001
    marker = tmp_path / "ran"
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / checkpoint.STATE_FILE).write_bytes(make(marker))
    message = refused(checkpoint.load, tmp_path / "ckpt", marker, checkpoint.CheckpointError, said)
    assert message.startswith(f"{tmp_path / 'ckpt' / 'state.pt'}: not a checkpoint this project wrote: "), message
    # the same bytes handed to a Ray worker (a warm start's parent)
    refused(lambda _: checkpoint.load_bytes(make(marker), "the parent's state"), None, marker, checkpoint.CheckpointError, said)


def loaders(tmp_path: Path) -> dict:
    """Every other reader of a file of tensors a user or a cache hands in: (where the file goes, read it, error, message)."""
    from pipelines.config import PipelineConfig  # noqa: PLC0415
    from pipelines.registry.served_model import GeneratorModel  # noqa: PLC0415
    from pipelines.workspace import Workspace  # noqa: PLC0415
    from pipelines.yardstick import Instrument, encoder_key, feature_classifier, feature_encoder, feature_extractor_key  # noqa: PLC0415

    cfg = PipelineConfig.model_validate({"runtime": {"workdir": str(tmp_path / "work")}})
    manifest = {"fingerprint": "data", "rows": {"train": 10}, "image_shape": [1, 8, 8], "num_classes": 2}
    cached = Workspace.of(cfg.runtime.workdir).classifiers / f"{feature_extractor_key(cfg, manifest)}.pt"
    encoder = Workspace.of(cfg.runtime.workdir).classifiers / f"{encoder_key(cfg, manifest)}.pt"
    return {
        "quick-FID file": (tmp_path / "q.pt", lambda p: QuickFID.load(p, str(p)), ForeignFile, "not a quick-FID file this project wrote"),
        "quick-FID bytes": (tmp_path / "q.pt", lambda p: QuickFID.load(p.read_bytes()), ForeignFile, "the quick-FID file: not a quick-FID"),
        "classifier cache": (cached, lambda _: feature_classifier(cfg, tmp_path / "no-dataset", manifest), ForeignFile,
                             "not a feature classifier this project cached"),
        "encoder cache": (encoder, lambda _: feature_encoder(cfg, tmp_path / "no-dataset", manifest), ForeignFile,
                          "not a self-supervised encoder this project cached"),
        "yardstick bundle": (tmp_path / "yardstick.pt", Instrument.load, ForeignFile, "not a yardstick this project wrote"),
        "Inception weights": (tmp_path / "w.pth", inception.load_fid_inception, inception.WeightsError, "not the FID Inception's state dict"),
        "registered generator": (tmp_path / "generator.pt", lambda p: GeneratorModel().load_context(SimpleNamespace(artifacts={"generator": str(p)})),
                                 ForeignFile, "not a generator this project registered"),
    }


LOADERS = ["quick-FID file", "quick-FID bytes", "classifier cache", "encoder cache", "yardstick bundle", "Inception weights", "registered generator"]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("bad", ["pickle payload", "truncated"])
def test_every_other_loader_refuses_a_pickle_payload_and_a_truncated_file(tmp_path: Path, loader: str, bad: str) -> None:
    path, call, error, said = loaders(tmp_path)[loader]
    marker = tmp_path / "ran"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dict((row[0], row[1]) for row in BAD_FILES)[bad](marker))
    message = refused(call, path, marker, error, said)
    assert loader in ("quick-FID bytes", "Inception weights") or str(path) in message, message  # (the caller names the weights)


def test_a_corrupt_cached_feature_array_names_the_folder_to_remove(tmp_path: Path) -> None:
    (tmp_path / "feats.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,")
    with pytest.raises(ForeignFile, match=f"{tmp_path / 'feats.npy'}: not a feature array: truncated or corrupt"):
        load_array(tmp_path / "feats.npy", "a feature array")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ForeignFile, match="objects.npy: not a feature array"):
        load_array(tmp_path / "objects.npy", "a feature array")


def test_a_file_that_cannot_be_opened_stays_an_os_error(tmp_path: Path) -> None:
    """A missing or forbidden file is the storage's problem, said in its own words (pipelines.errors), not a foreign file."""
    with pytest.raises(FileNotFoundError):
        load_tensors(tmp_path / "absent.pt", "absent.pt", "a checkpoint this project wrote")


def test_a_foreign_file_is_the_users_to_fix_and_not_retried() -> None:
    from pipelines.cli.app import _failure  # noqa: PLC0415
    from pipelines.errors import retry_unless_user_error  # noqa: PLC0415

    for err in (ForeignFile("x.pt: not a yardstick this project wrote: truncated or corrupt"),
                checkpoint.CheckpointError("ck/state.pt: not a checkpoint this project wrote: truncated or corrupt")):
        assert not retry_unless_user_error(None, None, SimpleNamespace(data=err))
        assert _failure(err) == (f"error: {err}", 2)


@settings(max_examples=150, deadline=None, database=None)  # seconds; nothing written
@given(st.one_of(
    st.binary(max_size=300),
    st.integers(0, len(GOOD)).map(lambda n: GOOD[:n]),
    st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=6).map(
        lambda edits: bytes(b if i not in dict(edits) else dict(edits)[i] for i, b in enumerate(GOOD))),
))
def test_any_bytes_read_as_a_dict_of_tensors_or_are_refused_in_one_line(blob: bytes) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = load_tensors(blob, "f.pt", "a checkpoint this project wrote")
        except ForeignFile as err:
            assert str(err).startswith("f.pt: not a checkpoint this project wrote: ") and "\n" not in str(err) and ADVICE not in str(err)
        else:
            assert isinstance(loaded, dict)
    assert not [w for w in caught if "pickle" in str(w.message)], [str(w.message) for w in caught]


# --- the code itself: nothing else unpickles ------------------------------------------------------------------------

UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
              ("dill", "load"), ("dill", "loads"), ("joblib", "load"), ("jit", "load"), ("pytorch", "load_model")}


def unsafe_loads(source: str, where: str) -> list[str]:
    """The calls in `source` that could unpickle: torch.load without weights_only=True (or outside gan/saved.py, the one
    reader), numpy.load without an explicit allow_pickle=False (numpy's default is False since 1.16.3; said outright, it
    does not hang on a version), a persisted Prefect result without the JSON serializer, pickle and its kin."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in ("torch", "numpy", "pickle"):
            names = {a.name for a in node.names} & {"load", "loads", "Unpickler"}
            found += [f"{where}:{node.lineno}: from {node.module} import {', '.join(sorted(names))}"] if names else []
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        given = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
        if name == "torch.load" and (given.get("weights_only") is not True or where != "gan/saved.py"):
            found.append(f"{where}:{node.lineno}: torch.load{'' if given.get('weights_only') is True else ' without weights_only=True'}"
                         f"{'' if where == 'gan/saved.py' else ' outside gan.saved'}")
        elif name in ("np.load", "numpy.load") and given.get("allow_pickle") is not False:
            found.append(f"{where}:{node.lineno}: {name} without allow_pickle=False")
        elif name.endswith("task") and given.get("persist_result") is True and given.get("result_serializer") != "json":
            found.append(f"{where}:{node.lineno}: a persisted task result without result_serializer='json' (Prefect's default pickles)")
        elif tuple(name.split(".")[-2:]) in UNPICKLERS:
            found.append(f"{where}:{node.lineno}: {name}")
    return found


def dotted(node: ast.AST) -> str:
    """`a.b.c` of a call's function; '' for anything else."""
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}".lstrip(".")
    return node.id if isinstance(node, ast.Name) else ""


def test_no_code_in_gan_or_pipelines_can_unpickle() -> None:
    files = sorted(p for package in ("gan", "pipelines") for p in (ROOT / package).rglob("*.py"))
    assert len(files) > 50, files
    found = [hit for path in files for hit in unsafe_loads(path.read_text(), path.relative_to(ROOT).as_posix())]
    assert found == [], found


def test_the_walk_finds_each_unsafe_form() -> None:
    """The walk itself, on code that does each thing it must find (and one that it must let be)."""
    source = "\n".join([
        "torch.load(p)", "torch.load(p, weights_only=False)", "np.load(p)", "numpy.load(p, allow_pickle=True)", "pickle.loads(b)",
        "from torch import load", "@task(persist_result=True)\ndef t(): pass", "torch.jit.load(p)", "mlflow.pytorch.load_model(u)",
        "np.load(p, allow_pickle=False)",
    ])
    found = unsafe_loads(source, "pipelines/x.py")
    assert sorted(int(hit.split(":")[1]) for hit in found) == [1, 2, 3, 4, 5, 6, 7, 9, 10], found
    assert unsafe_loads("torch.load(p, map_location='cpu', weights_only=True)", "gan/saved.py") == []
