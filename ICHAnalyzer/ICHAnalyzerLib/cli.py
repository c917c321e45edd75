"""Command line: ``ichanalyzer analyze|demo|models``.

Errors reach the user as one line on stderr with a non-zero exit code, never as a traceback
(``--debug`` shows it for bug reports).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .constants import SUBTYPE_KEYS
from .errors import ICHAnalyzerError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class StepProgress:
    """tqdm progress bar on stderr driven by ``(step, fraction)`` callbacks; silent when ``quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            # shown only on a terminal, and only once a run lasts more than a second
            self.bar = tqdm(total=100, file=sys.stderr, unit="%", leave=False, disable=None, delay=1.0,
                            bar_format="{desc:<22} {bar} {percentage:3.0f}% {elapsed}")

    def __call__(self, step: str, fraction: float) -> None:
        if self.bar is None or self.bar.disable:
            return
        self.bar.set_description_str(step)
        self.bar.update(max(0, round(100 * fraction) - self.bar.n))

    def close(self) -> None:
        """Remove the bar from the terminal."""
        if self.bar is not None:
            self.bar.close()


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def volume_table(report: dict, truth_ml: dict[str, float] | None = None,
                 truth_voxel_ml: dict[str, float] | None = None) -> str:
    """Plain-text table: subtype, (true volume), voxel volume, ABC/2 and their difference."""
    head = ["subtype"]
    if truth_ml is not None:
        head += ["true mL", "truth voxels mL"]
    head += ["volume mL", "ABC/2 mL", "ABC/2 unw. mL", "ABC/2 diff %", "max thick. mm", "P(detect)"]
    rows = []
    unmeasured = report.get("source_of_labels") == "none"  # nothing segmented: not '0 mL of hemorrhage'
    for key in (*SUBTYPE_KEYS, "total"):
        entry = report["volumes"][key]
        row = [key]
        if truth_ml is not None:
            row += [_fmt(truth_ml.get(key), 2), _fmt((truth_voxel_ml or {}).get(key), 2)]
        note = "" if entry.get("abc2_clinically_applicable", True) else "*"
        prob = report["detection"].get("any" if key == "total" else key)
        row += [_fmt(None if unmeasured else entry["volume_ml"], 2), _fmt(entry["abc2_ml"], 2) + note,
                _fmt(entry["abc2_unweighted_ml"], 2), _fmt(entry["abc2_difference_pct"]),
                _fmt(entry.get("max_thickness_mm")), _fmt(prob, 3)]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    lines.append("* ABC/2 is not clinically applicable to this subtype (use thickness for SDH/EDH).")
    if report["detection"].get("reason"):
        lines.append(f"Detection: {report['detection']['reason']}.")
    from .report import ventricle_prior_warning

    warning = ventricle_prior_warning(report)
    if warning:
        lines.append(f"IVH: {warning}.")
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace) -> int:
    """``analyze``: one scan to an output folder; prints the volume table and clinical summary."""
    from .pipeline import analyze

    progress = StepProgress(args.quiet)
    try:
        result = analyze(args.input, args.output, mask_path=args.mask, device=args.device, force=args.force,
                         series_uid=args.series, progress=progress, gcs=args.gcs, age=args.age)
    finally:
        progress.close()
    if not args.quiet:
        for warning in result.ct.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(volume_table(result.report))
        print(clinical_summary(result.report))
        print(f"Outputs written to {args.output}")
    return 0


def clinical_summary(report: dict) -> str:
    """Midline shift and ICH score in a few lines (or why they are missing)."""
    section = report.get("clinical")
    if not section:
        return "Clinical measures: not computed (no hemorrhage labels: no model ran and no --mask given)."
    lines = []
    shift = section.get("midline_shift") or {}
    if shift.get("shift_mm") is not None:
        note = shift.get("note") or "see report"
        reliable = "" if shift.get("reliable") else f" (unreliable: {note})"
        lines.append(f"Midline shift: {shift['shift_mm']:.1f} mm{reliable}")
    else:
        lines.append(f"Midline shift: not measured ({shift.get('note') or 'see report'})")
    score = section.get("ich_score") or {}
    if score.get("score") is not None:
        lines.append(f"ICH score: {score['score']}")
    elif score:
        lines.append(f"ICH score: incomplete, missing {', '.join(score.get('missing') or [])} "
                     "(give --gcs and --age)")
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    """``compare``: baseline against follow-up; prints volumes side by side and expansion flags."""
    from .compare import compare

    comparison = compare(args.baseline, args.followup, args.output, baseline_mask=args.baseline_mask,
                         followup_mask=args.followup_mask, device=args.device, force=args.force)
    if not args.quiet:
        import json

        print(json.dumps({k: comparison[k] for k in ("volumes", "expansion") if k in comparison}, indent=1))
        print(f"Outputs written to {args.output}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the whole pipeline on the synthetic phantom, measures next to the truth."""
    from .io import write_ct
    from .phantom import make_phantom
    from .pipeline import analyze

    outdir = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="ichanalyzer-demo-")) / "out"
    phantom = make_phantom(seed=args.seed, tilt_deg=args.tilt)
    workdir = Path(tempfile.mkdtemp(prefix="ichanalyzer-phantom-"))
    ct_path = workdir / "phantom_ct.nii.gz"
    write_ct(ct_path, phantom.ct)
    mask_path = None
    if args.truth_mask:
        from .io import write_labelmap_nifti

        mask_path = workdir / "phantom_truth.nii.gz"
        write_labelmap_nifti(mask_path, phantom.labels, phantom.ct)
    progress = StepProgress(args.quiet)
    try:
        result = analyze(ct_path, outdir, mask_path=mask_path, device=args.device, force=args.force,
                         progress=progress)
    finally:
        progress.close()
    from .pipeline import measure

    truth = measure(result.ct, phantom.labels)
    truth_voxel = {key: truth[key]["volume_ml"] for key in truth}
    print(f"ICHAnalyzer demo: synthetic head CT phantom (seed {args.seed}, tilt {args.tilt:g} deg), "
          f"{'true label map given as --mask' if args.truth_mask else 'labels from the model'}")
    true_ml = dict(phantom.true_volumes_ml)
    true_ml["total"] = sum(true_ml.get(key, 0.0) for key in SUBTYPE_KEYS)
    print(volume_table(result.report, true_ml, truth_voxel))
    print(f"Intracranial volume: {result.report['brain']['intracranial_volume_ml']} mL "
          f"(phantom: {phantom.intracranial_volume_ml:.1f} mL)")
    print(f"Outputs written to {outdir}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``models``: list the installed models."""
    try:
        from .inference import available_models
    except ImportError:
        print("No model is installed in this build.")
        return 0
    models = available_models()
    if not models:
        print("No model is installed (Models.json lists none).")
    for m in models:
        print(f"{m['name']}  version {m['version']}  file {m['file']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ichanalyzer`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="ichanalyzer", description=(
        "Intracranial hemorrhage detection, segmentation and volumetry on non-contrast head CT. "
        "Research use only, not for clinical decisions."))
    parser.add_argument("--version", action="version", version=f"ichanalyzer {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="where the model runs (auto: GPU when present)")
        p.add_argument("--force", action="store_true", help="replace an existing output folder")
        p.add_argument("--quiet", action="store_true", help="no progress or tables, errors only")

    p = sub.add_parser("analyze", help="analyse a head CT (DICOM folder, .nii/.nii.gz, .nrrd)")
    p.add_argument("input", help="DICOM folder, NIfTI or NRRD file")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (created; must not exist unless --force)")
    p.add_argument("--mask", help="label map on the input's grid (1 IPH, 2 IVH, 3 SAH, 4 SDH, 5 EDH) "
                                  "used instead of the model's segmentation")
    p.add_argument("--series", help="SeriesInstanceUID to analyse when a DICOM folder holds several")
    p.add_argument("--gcs", type=int, help="Glasgow Coma Scale (3-15), completes the ICH score")
    p.add_argument("--age", type=int, help="patient age in years, completes the ICH score")
    common(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("compare", help="follow-up against baseline: volumes side by side, expansion flags")
    p.add_argument("baseline", help="baseline CT (DICOM folder, NIfTI or NRRD)")
    p.add_argument("followup", help="follow-up CT (DICOM folder, NIfTI or NRRD)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--baseline-mask", help="label map on the baseline's grid instead of the model's")
    p.add_argument("--followup-mask", help="label map on the follow-up's grid instead of the model's")
    common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="run the whole pipeline on a built-in synthetic head CT phantom")
    p.add_argument("-o", "--output", help="output folder (default: a new temporary folder)")
    p.add_argument("--seed", type=int, default=0, help="phantom random seed")
    p.add_argument("--tilt", type=float, default=0.0, help="gantry tilt of the phantom in degrees")
    p.add_argument("--truth-mask", action="store_true", help="measure the phantom's true label map instead "
                                                              "of the model's segmentation")
    common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list the installed models")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ichanalyzer`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ICHAnalyzerError as exc:
        print(f"ichanalyzer: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("ichanalyzer: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("ichanalyzer: error: out of memory", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        if args.debug:
            raise
        print(f"ichanalyzer: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
