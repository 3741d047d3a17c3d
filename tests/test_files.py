"""The file helper (`gan.files`): a file or folder is published whole or not at all, and what dead writers on this host
left is cleaned while a live writer's and another host's temporaries are kept."""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from gan import files


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    files.write_json(path, {"v": 1})
    with pytest.raises(RuntimeError, match="the writer broke"), files.replacing(path) as tmp:
        tmp.write_text('{"v": 2, "half')
        raise RuntimeError("the writer broke")
    assert json.loads(path.read_text()) == {"v": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    with files.replacing(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(f".tmp-report.json-{socket.gethostname()}-{os.getpid()}-")
        tmp.write_text('{"v": 3}')
    assert json.loads(path.read_text()) == {"v": 3} and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_folder_written_aside_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="disk full"), files.written_aside(tmp_path / "ds") as tmp:
        (tmp / "part-0").write_bytes(b"half")
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []
    with files.written_aside(tmp_path / "ds") as tmp:
        (tmp / "part-0").write_bytes(b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["ds"] and (tmp_path / "ds" / "part-0").read_bytes() == b"whole"


def test_stale_temporaries_of_dead_writers_on_this_host_are_removed_and_others_kept(tmp_path: Path) -> None:
    """Temporaries name host and process: on shared storage, another node's live writer must keep its own."""
    host = socket.gethostname()
    stale, live, elsewhere = (tmp_path / f".tmp-ds-{h}-{pid}-abcd1234" for h, pid in
                              ((host, 999999999), (host, os.getpid()), ("other-node", 999999999)))
    for folder in (stale, live, elsewhere):
        (folder / "train").mkdir(parents=True)
    stale_file = tmp_path / f".tmp-state.pt-{host}-999999999-0123abcd"
    stale_file.write_bytes(b"half a checkpoint")
    files.remove_stale_temporaries(tmp_path)
    assert not stale.exists() and not stale_file.exists() and live.exists() and elsewhere.exists()
    with files.written_aside(tmp_path / "ds") as tmp:
        assert tmp.name.startswith(f".tmp-ds-{host}-{os.getpid()}-")


def test_a_live_writer_of_another_process_keeps_its_temporaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another live process's temporaries stay, whether this process may signal it or not (another user's: EPERM)."""
    host = socket.gethostname()
    with subprocess.Popen(["sleep", "30"]) as writer:
        try:
            signalled = tmp_path / f".tmp-ds-{host}-{writer.pid}-abcd1234"
            signalled.mkdir()
            files.remove_stale_temporaries(tmp_path)
            assert signalled.exists()
        finally:
            writer.kill()
    forbidden = tmp_path / f".tmp-ds-{host}-424242-abcd1234"
    forbidden.mkdir()

    def kill(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")  # another user's process

    monkeypatch.setattr(files.os, "kill", kill)
    files.remove_stale_temporaries(tmp_path)
    assert forbidden.exists()
