"""The content-hash helper (`gan.hashing`): known digests, so that the values caches, dataset names and registry tags
are keyed by never move; arrays hash as their C-order bytes whatever their layout."""

import hashlib
import io
from pathlib import Path

import numpy as np

from gan.hashing import Digest, sha256, sha256_file, sha256_json, sha256_records

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of no bytes
ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc"), FIPS 180-2's example


def test_known_digests_of_bytes_text_and_files(tmp_path: Path) -> None:
    assert sha256() == sha256(b"") == EMPTY and sha256(b"abc") == sha256("abc") == sha256("a", b"bc") == ABC
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == sha256_file(str(tmp_path / "f")) == sha256_file(io.BytesIO(b"abc")) == ABC
    big = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()  # more than one block
    (tmp_path / "big").write_bytes(big)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(big).hexdigest()


def test_records_and_json_are_written_one_fixed_way() -> None:
    assert sha256_records([("a", "1"), ("b", "2")]) == sha256("a\x1f1\x1eb\x1f2\x1e")
    assert sha256_records([("a", "1"), ("b", "2")]) != sha256_records([("a", "1b"), ("", "2")])
    assert sha256_json({"b": 1, "a": [1, 2]}) == sha256_json({"a": [1, 2], "b": 1}) == sha256('{"a": [1, 2], "b": 1}')
    assert sha256_json({"b": 1, "a": [1, 2]}) == "3813f9409eb0095bf9c8e1225c627acf867d89bd18b8856fc38588a0c8c490f3"


def test_arrays_hash_as_their_c_order_bytes() -> None:
    a = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert sha256(a) == sha256(a.tobytes()) and sha256(a.T) == sha256(np.ascontiguousarray(a.T).tobytes())
    assert sha256(np.zeros((0, 3), np.uint8)) == EMPTY
    streamed = Digest(a[:1]).add(a[1:], b"tail")
    assert streamed.hex() == sha256(a.tobytes() + b"tail") and streamed.raw() == hashlib.sha256(a.tobytes() + b"tail").digest()
