"""Background entry point: ``python .../ICHAnalyzerSlicerLib/worker.py INPUT OUTDIR [--device D] [--mask M]``.

Runs the core's ``pipeline.analyze`` (the same as ``ichanalyzer analyze --force``) and prints
machine-readable progress and error lines for :class:`ICHAnalyzerSlicerLib.process.BackgroundJob`.
No Slicer import: it runs in Slicer's Python (PythonSlicer) or any Python with the core installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the module folder (ICHAnalyzerLib's parent) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ICHAnalyzerSlicerLib.process import ERROR_TAG, PROGRESS_TAG  # noqa: E402


def _progress(step: str, fraction: float) -> None:
    print(f"{PROGRESS_TAG}\t{fraction:.3f}\t{step}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ICHAnalyzerSlicerLib.worker")
    parser.add_argument("input")
    parser.add_argument("outdir")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--mask", default=None)
    parser.add_argument("--gcs", type=int, default=None)
    parser.add_argument("--age", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        from ICHAnalyzerLib.errors import ICHAnalyzerError
        from ICHAnalyzerLib.pipeline import analyze
    except ImportError as exc:
        print(f"{ERROR_TAG}\tICHAnalyzer's Python dependencies are missing: {exc}", flush=True)
        return 3
    try:
        analyze(
            args.input,
            args.outdir,
            mask_path=args.mask,
            device=args.device,
            force=True,
            progress=_progress,
            gcs=args.gcs,
            age=args.age,
        )
    except ICHAnalyzerError as exc:
        print(f"{ERROR_TAG}\t{exc}", flush=True)
        return 2
    except ImportError as exc:
        print(f"{ERROR_TAG}\tICHAnalyzer's Python dependencies are missing: {exc}", flush=True)
        return 3
    except MemoryError:
        print(
            f"{ERROR_TAG}\tOut of memory during the analysis (try device CPU, or close other programs).",
            flush=True,
        )
        return 2
    _progress("done", 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
