"""Fixtures: one real stub process per mode for the whole session.

Starting a process costs ~1 s of a shared 2-core machine, so the default and
legacy stubs are shared; every test uses its own camera id (``cam``) so that
tests never see each other's data, and fault settings are reset after each
test. Tests that restart, kill or configure a stub start their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.stub_process import StubProcess


@pytest.fixture(scope="session")
def _stub_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubProcess]:
    db = tmp_path_factory.mktemp("stub") / "stub.db"
    with StubProcess(db, "--faults") as proc:
        yield proc


@pytest.fixture(scope="session")
def _legacy_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubProcess]:
    db = tmp_path_factory.mktemp("legacy") / "stub.db"
    with StubProcess(db, "--legacy", "--faults") as proc:
        yield proc


@pytest.fixture
def stub(_stub_process: StubProcess) -> Iterator[StubProcess]:
    """The stub in its default (extensions) mode, with the fault API on."""
    assert _stub_process.running(), _stub_process.log()
    yield _stub_process
    _stub_process.reset_faults()


@pytest.fixture
def legacy_stub(_legacy_process: StubProcess) -> Iterator[StubProcess]:
    """The stub in --legacy mode (deployed-server behaviour), fault API on."""
    assert _legacy_process.running(), _legacy_process.log()
    yield _legacy_process
    _legacy_process.reset_faults()


@pytest.fixture(params=["default", "legacy"])
def any_stub(request: pytest.FixtureRequest) -> StubProcess:
    """Both modes, for behaviour a client written for deployed servers relies on."""
    name = "stub" if request.param == "default" else "legacy_stub"
    return request.getfixturevalue(name)


@pytest.fixture
def cam() -> str:
    return f"cam-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def own_db(tmp_path: Path) -> Path:
    return tmp_path / "own.db"
