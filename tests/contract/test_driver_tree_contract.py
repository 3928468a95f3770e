"""The driver contract for changes to an instance's tree (what SFTP needs beyond read and write): make a
directory, remove an entry, rename one; on the fake, the local driver and the node agent over HTTP alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.ports import DriverError
from tests.contract.test_driver_contract import Backend, Driver, backend, driver, make_spec

__all__ = ["backend", "driver"]  # the fixtures, shared with the main contract


def code_of(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(DriverError) as info:
        call()
    return info.value.code


def test_make_remove_and_rename(driver: Driver) -> None:
    spec = make_spec()
    driver.create_directory(spec)
    driver.make_directory(spec, "/worlds/new")
    assert driver.list_files(spec, "/worlds") == [{"name": "new", "type": "dir", "size": 0}]
    assert driver.list_files(spec, "/worlds/new") == []
    assert code_of(lambda: driver.make_directory(spec, "worlds")) == "already_exists"
    driver.write_file(spec, "worlds/new/level.dat", b"level")
    assert code_of(lambda: driver.delete_path(spec, "worlds/new", directory=True)) == "not_empty"
    assert code_of(lambda: driver.delete_path(spec, "worlds/new", directory=False)) == "is_a_directory"
    assert code_of(lambda: driver.delete_path(spec, "worlds/new/level.dat", directory=True)) == "not_a_directory"
    driver.rename_path(spec, "worlds/new", "worlds/old")
    assert driver.read_file(spec, "worlds/old/level.dat") == b"level"
    assert code_of(lambda: driver.read_file(spec, "worlds/new/level.dat")) == "not_found"
    driver.write_file(spec, "a.txt", b"a")
    driver.write_file(spec, "b.txt", b"b")
    assert code_of(lambda: driver.rename_path(spec, "a.txt", "b.txt")) == "already_exists"
    driver.rename_path(spec, "a.txt", "b.txt", overwrite=True)
    assert driver.read_file(spec, "b.txt") == b"a"
    assert code_of(lambda: driver.rename_path(spec, "missing", "x")) == "not_found"
    assert code_of(lambda: driver.rename_path(spec, "worlds", "worlds/old/inner")) == "bad_path"
    driver.delete_path(spec, "worlds/old/level.dat")
    driver.delete_path(spec, "worlds/old", directory=True)
    driver.delete_path(spec, "b.txt")
    assert code_of(lambda: driver.delete_path(spec, "b.txt")) == "not_found"
    assert [e["name"] for e in driver.list_files(spec, "/")] == ["worlds"]
    for call in (lambda: driver.delete_path(spec, "/", directory=True), lambda: driver.make_directory(spec, "/"),
                 lambda: driver.rename_path(spec, "../x", "y"), lambda: driver.rename_path(spec, "worlds", "../w"),
                 lambda: driver.make_directory(spec, "a/../../b"), lambda: driver.delete_path(spec, "a\0b")):
        assert code_of(call) == "bad_path"


@pytest.mark.parametrize("backend", ["local", "agent"], indirect=True)  # the fake has no symlinks
def test_tree_changes_never_leave_the_root_through_symlinks(backend: Backend, tmp_path: Path) -> None:
    assert backend.node is not None
    driver = backend.driver
    spec = make_spec()
    driver.create_directory(spec)
    root = backend.node.instance_dir(spec)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"host secret")
    (root / "out").symlink_to(outside)
    (root / "link-to-secret").symlink_to(outside / "secret.txt")
    for call in (lambda: driver.make_directory(spec, "out/new"), lambda: driver.delete_path(spec, "out/secret.txt"),
                 lambda: driver.rename_path(spec, "out/secret.txt", "stolen.txt"),
                 lambda: driver.rename_path(spec, "link-to-secret", "out/moved")):
        assert code_of(call) == "bad_path"
    assert (outside / "secret.txt").read_bytes() == b"host secret" and sorted(os.listdir(outside)) == ["secret.txt"]
    driver.rename_path(spec, "link-to-secret", "renamed-link")  # the link itself moves, inside the root
    driver.delete_path(spec, "renamed-link")  # and goes: its target stays
    driver.delete_path(spec, "out")
    assert (outside / "secret.txt").read_bytes() == b"host secret"
    assert driver.list_files(spec, "/") == []
