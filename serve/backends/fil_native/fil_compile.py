"""Compile one model into the ``fil`` backends' shared cache: the native backend runs this in a child
process as the Python backend runs ``fil_forest.compile_model`` in a thread. Prints ``LIBRARY <path>``;
exit code 3: no C compiler. SIGTERM (the model is unloading) cancels the build cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fil_forest as ff  # noqa: E402  (installed next to this file)

EXIT_COMPILER_MISSING = 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_file", type=Path)
    p.add_argument("model_type", choices=sorted(ff.FIL_MODEL_FILENAMES))
    p.add_argument("cache_dir", type=Path)
    p.add_argument("--predict-proba", action="store_true")
    p.add_argument("--allow-unknown-field", action="store_true")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)

    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    os.nice(5)  # serving requests comes first
    model = ff.load_model(args.model_file, args.model_type, xgboost_allow_unknown_field=args.allow_unknown_field)
    key = ff.library_key(args.model_file, ff.apply_native_postprocessor(model, predict_proba=args.predict_proba))
    try:
        library = ff.compile_model(model, key, args.cache_dir, jobs=args.jobs, cancel=cancel, log=print)
    except ff.CompilerMissing as e:
        print(e, flush=True)
        return EXIT_COMPILER_MISSING
    except ff.CompileCancelled:
        print("cancelled", flush=True)
        return 1
    print(f"LIBRARY {library}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
