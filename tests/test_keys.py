"""Key files: created private, read only if regular, small and private (as ssh insists)."""

from __future__ import annotations

import os
import stat

import pytest

from dhtscope.node.constants import MAX_KEY_FILE_BYTES
from dhtscope.node.keys import Identity, KeyFileError
from dhtscope.tui.cli import main


def test_a_new_key_file_is_created_0600_and_loads_as_the_same_identity(tmp_path) -> None:
    path = tmp_path / "sub" / "node.pem"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load_or_create(path).node_id == first.node_id


def test_a_key_readable_by_others_is_refused_with_the_fix(tmp_path) -> None:
    path = tmp_path / "node.pem"
    Identity.load_or_create(path)
    for mode in (0o644, 0o640, 0o604):
        path.chmod(mode)
        with pytest.raises(KeyFileError, match=f"mode 0{mode:o}.*chmod 600 {path}"):
            Identity.load_or_create(path)
    path.chmod(0o400)
    Identity.load_or_create(path)


@pytest.mark.timeout(10)
def test_dev_zero_is_refused_without_reading_it() -> None:
    with pytest.raises(KeyFileError, match="not a regular file"):
        Identity.load_or_create("/dev/zero")


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path) -> None:
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        Identity.load_or_create(fifo)


def test_a_directory_and_an_oversized_file_are_refused(tmp_path) -> None:
    with pytest.raises(KeyFileError, match="not a regular file"):
        Identity.load_or_create(tmp_path)
    big = tmp_path / "big.pem"
    big.write_bytes(b"-" * (MAX_KEY_FILE_BYTES + 1))
    big.chmod(0o600)
    with pytest.raises(KeyFileError, match=f"larger than {MAX_KEY_FILE_BYTES} bytes"):
        Identity.load_or_create(big)


def test_the_cli_refuses_a_bad_key_in_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "node.pem"
    Identity.load_or_create(path)
    path.chmod(0o644)
    assert main(["node", "--listen", "127.0.0.1:0", "--key", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "chmod 600" in err and "Traceback" not in err
