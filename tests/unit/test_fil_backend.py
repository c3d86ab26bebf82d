"""Which fil backend the launcher installs: native when it builds, else Python with a notice or an error."""

from __future__ import annotations

import pytest

from serve import fil_backend
from serve.triton import TritonError


@pytest.fixture
def unbuildable(monkeypatch):
    """A machine where the native backend is not built and no C++ compiler exists."""
    monkeypatch.setattr(fil_backend, "native_is_fresh", lambda: False)
    monkeypatch.setenv("CXX", "no-such-c++-compiler")


def test_auto_falls_back_to_python_with_a_one_line_notice(tmp_path, unbuildable, capsys):
    assert fil_backend.install_fil_backend(tmp_path, {"FIL_BACKEND": "auto"}) == "python"
    assert {p.name for p in tmp_path.iterdir()} == {"model.py", "fil_config.py", "fil_forest.py", "fil_batch.c"}
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and notice[0].startswith("notice: native fil backend unavailable")
    assert "no-such-c++-compiler is not installed" in notice[0]


@pytest.mark.parametrize(("choice", "message"), [
    ("native", "FIL_BACKEND=native, but the native fil backend cannot be built"),
    ("cuda", "choose one of auto, native, python"),
])
def test_an_impossible_choice_is_an_error(tmp_path, unbuildable, choice, message):
    with pytest.raises(TritonError, match=message):
        fil_backend.install_fil_backend(tmp_path, {"FIL_BACKEND": choice})


def test_native_install_holds_the_library_and_its_compile_helper(tmp_path):
    """<backend-dir>/fil gets libtriton_fil.so, its background compiler and interpreter; no model.py."""
    if not fil_backend.native_is_fresh():
        pytest.skip("the native fil backend is not built (make native-backend)")
    assert fil_backend.install_fil_backend(tmp_path, {"FIL_BACKEND": "auto"}) == "native"
    installed = {p.name for p in tmp_path.iterdir()}
    assert installed == {"libtriton_fil.so", "fil_compile.py", "fil_forest.py", "fil_batch.c", "fil_python"}
