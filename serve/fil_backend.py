"""Which ``fil`` backend the local Triton serves with, and putting it in place.

Two implementations of one contract (docs/fil_contract.md): ``native`` (``serve/backends/fil_native``,
a C++17 Triton backend) and ``python`` (``serve/backends/fil``, run by Triton's Python backend stub).
``FIL_BACKEND``: ``auto`` (default) serves native when it is built or builds here (g++,
nlohmann-json3-dev), else Python with a one-line notice; ``native`` fails instead; ``python``.

    python -m serve.fil_backend build     # what `make native-backend` runs after installing deps
    python -m serve.fil_backend status
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

BACKENDS = Path(__file__).resolve().parent / "backends"
PYTHON_SOURCE = BACKENDS / "fil"
NATIVE_SOURCE = BACKENDS / "fil_native"
NATIVE_LIB = NATIVE_SOURCE / "build" / "libtriton_fil.so"
KINDS = ("auto", "native", "python")


class NativeBackendUnavailable(RuntimeError):
    """The native backend is not built and cannot be built here; the message says why."""


def native_is_fresh() -> bool:
    """The library exists and is newer than every file it is built from (its Makefile's prerequisites)."""
    inputs = [*NATIVE_SOURCE.glob("src/*"), NATIVE_SOURCE / "Makefile", PYTHON_SOURCE / "fil_config.py",
              PYTHON_SOURCE / "fil_forest.py"]
    return NATIVE_LIB.is_file() and all(p.stat().st_mtime_ns <= NATIVE_LIB.stat().st_mtime_ns for p in inputs)


def build_native(*, quiet: bool = True) -> Path:
    """Build ``libtriton_fil.so`` unless it is up to date (concurrent callers wait for one build), or
    raise NativeBackendUnavailable with the build's own error line."""
    if native_is_fresh():
        return NATIVE_LIB
    for tool in ("make", os.environ.get("CXX", "g++")):
        if shutil.which(tool) is None:
            raise NativeBackendUnavailable(f"{tool} is not installed "
                                           "(the native fil backend is built with make and g++)")
    (NATIVE_SOURCE / "build").mkdir(exist_ok=True)
    with open(NATIVE_SOURCE / "build" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if native_is_fresh():
            return NATIVE_LIB
        # the Makefile finds libtreelite.so through PYTHON's treelite package
        cmd = ["make", "-C", str(NATIVE_SOURCE), f"-j{os.cpu_count() or 1}", f"PYTHON={sys.executable}"]
        proc = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
        if proc.returncode != 0:
            output = (proc.stderr or "") + (proc.stdout or "") if quiet else ""
            lines = [ln for ln in output.splitlines() if "error" in ln.lower()] or output.splitlines()[-1:]
            raise NativeBackendUnavailable(lines[0].strip() if lines else f"`{' '.join(cmd)}` failed")
    return NATIVE_LIB


def install_fil_backend(dest: Path, env: Mapping[str, str] | None = None) -> str:
    """Put the ``fil`` backend ``env["FIL_BACKEND"]`` asks for into ``dest`` (Triton's empty
    ``<backend-dir>/fil``); returns ``"native"`` or ``"python"``, or raises serve.triton.TritonError."""
    from serve.triton import TritonError  # the launcher's error type; it imports this module

    kind = ((env if env is not None else os.environ).get("FIL_BACKEND") or "auto").strip().lower()
    if kind not in KINDS:
        raise TritonError(f"FIL_BACKEND={kind!r}: choose one of {', '.join(KINDS)}")
    if kind != "python":
        try:
            library = build_native()
        except NativeBackendUnavailable as e:
            if kind == "native":
                raise TritonError(f"FIL_BACKEND=native, but the native fil backend cannot be built: {e}") from None
            print(f"notice: native fil backend unavailable ({e}); serving with the Python fil backend", file=sys.stderr)
        else:
            # Triton loads <backend-dir>/fil/libtriton_fil.so; it compiles with fil_compile.py on
            # fil_forest.py (and its fil_batch.c), run by this interpreter
            for source in (library, NATIVE_SOURCE / "fil_compile.py", PYTHON_SOURCE / "fil_forest.py",
                           PYTHON_SOURCE / "fil_batch.c"):
                shutil.copy2(source, dest / source.name)
            (dest / "fil_python").write_text(sys.executable + "\n")
            return "native"
    for source in [*PYTHON_SOURCE.glob("*.py"), PYTHON_SOURCE / "fil_batch.c"]:
        shutil.copy2(source, dest / source.name)
    return "python"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.fil_backend", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["build", "status"])
    if p.parse_args(argv).command == "status":
        print(f"{NATIVE_LIB}: {'built, up to date' if native_is_fresh() else 'not built or out of date'}")
        return 0
    try:
        print(build_native(quiet=False))
    except NativeBackendUnavailable as e:
        p.exit(1, f"error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
