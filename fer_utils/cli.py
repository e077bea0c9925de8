"""Command line: facial expressions in image files, a video or a webcam, with an ONNX model.

    python -m fer_utils.cli predict IMAGE... [--format json|csv] [--detector haar|mtcnn] [--whole]
    python -m fer_utils.cli run --source 0|clip.mp4|FOLDER [--out annotated.mp4] [--detector haar|mtcnn]
                                [--detect-every N] [--tracker template|mil|hold] [--max-frames N] [--no-show]
    python -m fer_utils.cli make-clip clip.mp4 [--frames N]     (a test clip from a real face photo)

Every command takes ``--model PATH`` (default: the released ``models/fer_champion.onnx``).
Installed as the console script ``fer-predict``.

Each problem prints one line starting with ``error:`` on stderr (never a traceback), and the
exit status says how it went:

    0    ok; a photo without a face is a result too ("no face" in the output, a note on stderr)
    1    partial: some inputs failed (each has its error line), the others were processed
    2    bad input or bad model: nothing could be processed (a missing or damaged file, a folder
         given as an image, an --out path that cannot be written, an ONNX file that is not a
         7-class probability model, an invalid option)
    3    an unexpected internal error: the traceback goes to a log file named on stderr
         (``--debug`` prints it instead)
    130  interrupted (Ctrl+C); a partial video of a file or folder is not kept

Limits: images up to 50 megapixels (``realtime.MAX_PIXELS``, checked before decoding) and at
least 24x24 pixels (``realtime.MIN_FACE_SIDE``: smaller is not taken as a face); ``--margin``
0-1; ``--out`` must end in .mp4 or .avi and is checked before any frame is processed. Files are
written atomically: a failed or interrupted run leaves neither a partial nor a temporary file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

from .config import CLASS_NAMES

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
NO_FACE_NOTE = ("no face found (the detector looks for frontal, upright faces; --detector mtcnn finds turned ones, "
                "--whole takes the image as one face)")


def _load_classifier(path: str | None, threads: int | None):
    from .export import HOW_TO_GET_A_MODEL, RELEASED_MODEL, ModelFileError, OnnxClassifier

    model = Path(path) if path else RELEASED_MODEL
    if not model.exists():
        what = "the released model is not in this checkout yet" if path is None else "no such file"
        raise ModelFileError(f"no model at {model}: {what}; {HOW_TO_GET_A_MODEL}")
    if model.suffix == ".keras":
        raise ModelFileError(f"{model}: a Keras model; the CLI runs ONNX models: convert it with "
                             "fer_utils.export.export_onnx (or notebook 09)")
    return OnnxClassifier(model, threads=threads)


def _detector(name: str, still: bool):
    from .realtime import HaarDetector, MTCNNDetector

    if name == "mtcnn":
        return MTCNNDetector(width=640 if still else 320)
    return HaarDetector(width=800 if still else 240)


def _predict(args) -> int:
    from .realtime import Recognizer, SourceError, read_image

    recognizer = Recognizer(_load_classifier(args.model, args.threads), _detector(args.detector, still=True),
                            margin=args.margin)
    results, failed = [], 0
    for name in args.images:
        try:
            image = read_image(name)
            faces = recognizer.predict_image(image, whole=True if args.whole else None)
        except SourceError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            results.append({"image": name, "error": str(exc), "faces": []})
            continue
        results.append({"image": name, "width": int(image.shape[1]), "height": int(image.shape[0]), "faces": faces})
        if not faces:
            results[-1]["note"] = NO_FACE_NOTE
            print(f"note: {name}: {NO_FACE_NOTE}", file=sys.stderr)
    sys.stdout.write(_as_json(results) if args.format == "json" else _as_csv(results))
    if failed == len(args.images):
        return EXIT_ERROR
    return EXIT_PARTIAL if failed else EXIT_OK


def _as_json(results: list[dict]) -> str:
    return json.dumps(results, indent=2) + "\n"


def _as_csv(results: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "face", "x", "y", "w", "h", "score", "label", *CLASS_NAMES])
    for item in results:
        if not item["faces"]:
            writer.writerow([item["image"], "", "", "", "", "", "", "error" if "error" in item else "no face",
                             *[""] * len(CLASS_NAMES)])
        for i, face in enumerate(item["faces"]):
            probabilities = face.get("probabilities", {})
            writer.writerow([item["image"], i, *face["box"], face["score"], face["label"],
                             *[probabilities.get(c, "") for c in CLASS_NAMES]])
    return out.getvalue()


def _run(args) -> int:
    from .realtime import Recognizer, SourceError, check_video_path, has_display, run_pipeline

    if args.out:
        check_video_path(args.out)  # before the model loads and any frame is processed
    show = has_display() and not args.no_show
    if not show and not args.out and not args.no_show:
        print("note: no display here, so no window; add --out annotated.mp4 to save the annotated video",
              file=sys.stderr)
    classifier = _load_classifier(args.model, args.threads)
    recognizer = Recognizer(classifier, _detector(args.detector, still=False), args.detect_every, args.tracker,
                            margin=args.margin)
    source = int(args.source) if args.source.strip().isdigit() else args.source
    result = run_pipeline(source, recognizer, out=args.out, show=show, max_frames=args.max_frames,
                          progress=sys.stderr.isatty())
    for problem in result.skipped:
        print(f"error: {problem}", file=sys.stderr)
    if result.frames == 0 and result.stopped != "interrupted":
        raise SourceError(f"{result.source}: no frame could be read" + ("; no video written" if args.out else ""))
    print(f"source: {result.source}\ndetector: {recognizer.description}\n"
          f"frames: {result.frames} ({result.frames_with_face} with a face, {result.faces} faces; {result.stopped})\n"
          f"FPS (wall clock, everything included): {result.fps:.1f}")
    if result.frames:
        print(result.stats.table().round(2).to_string())
    if result.video:
        print(f"annotated video: {result.video}")
    if result.stopped == "interrupted":
        if args.out and not result.video:
            print(f"interrupted: {args.out} not written (a partial video of a file is not kept)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_PARTIAL if result.skipped else EXIT_OK


def _make_clip(args) -> int:
    from .realtime import check_video_path, make_test_clip

    check_video_path(args.output)
    make_test_clip(args.frames, path=args.output, fps=args.fps)
    print(f"wrote {args.output} ({args.frames} frames, 640x480, {args.fps:g} fps)")
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse, with its complaints as one ``error:`` line (after the usage) and status 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"error: {message}\n")


def _number(kind: type, low: float, high: float | None = None):
    """An argparse type: a ``kind`` number in ``[low, high]`` (``high`` None: no upper bound)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"{text} is outside {low:g}-{high:g}" if high is not None else f"{text} is below {low:g}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fer-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", help="print the traceback of an internal error")
    common = _Parser(add_help=False, parents=[debug])
    common.add_argument("--model", default=None,
                        help="ONNX model (default: models/fer_champion.onnx, the released model)")
    common.add_argument("--detector", choices=("haar", "mtcnn"), default="haar",
                        help="face detector: haar (fast, default) or mtcnn (accurate, slow, levels the eyes)")
    common.add_argument("--margin", type=_number(float, 0.0, 1.0), default=0.1,
                        help="border added around a detected face (share of its side, 0-1)")
    common.add_argument("--threads", type=_number(int, 1), default=None,
                        help="ONNX Runtime intra-op threads (default: its own)")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", parents=[common], help="expressions of the faces in image files")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--format", choices=("json", "csv"), default="json")
    predict.add_argument("--whole", action="store_true",
                         help="treat each image as one face crop, no detection (automatic for images up to 64 px)")
    predict.set_defaults(func=_predict)

    run = commands.add_parser("run", parents=[common], help="a webcam or a video, annotated live")
    run.add_argument("--source", required=True, help="camera index (0), a video file or a folder of images")
    run.add_argument("--out", default=None, help="write the annotated video here (.mp4 or .avi)")
    run.add_argument("--detect-every", type=_number(int, 1), default=1, metavar="N",
                     help="detect faces every N frames, track in between")
    run.add_argument("--tracker", choices=("template", "mil", "hold"), default="template",
                     help="how faces are followed between detections")
    run.add_argument("--max-frames", type=_number(int, 1), default=None, metavar="N", help="stop after N frames")
    run.add_argument("--no-show", action="store_true", help="no window, even where a display exists")
    run.set_defaults(func=_run)

    clip = commands.add_parser("make-clip", parents=[debug], help="write a test clip made from a real face photo")
    clip.add_argument("output", help="video file to write (.mp4 or .avi)")
    clip.add_argument("--frames", type=_number(int, 1), default=90)
    clip.add_argument("--fps", type=_number(float, 1.0, 240.0), default=15.0)
    clip.set_defaults(func=_make_clip)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fer_utils.cli`` and the ``fer-predict`` console script."""
    args = build_parser().parse_args(argv)
    from .export import ModelFileError
    from .realtime import SourceError

    try:
        return args.func(args)
    except (ModelFileError, SourceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001  (a bug: the user gets one line, the log the traceback)
        return _internal_error(exc, args.debug)


def _internal_error(exc: Exception, debug: bool) -> int:
    """Report an unexpected exception: its traceback on stderr with ``--debug``, else in a log
    file that the one ``error:`` line names."""
    summary = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
    if debug:
        traceback.print_exc()
        print(f"error: internal error ({summary})", file=sys.stderr)
        return EXIT_INTERNAL
    handle, log = tempfile.mkstemp(prefix="fer-predict-", suffix=".log")
    with os.fdopen(handle, "w") as out:
        traceback.print_exc(file=out)
    print(f"error: internal error ({summary}); the traceback is in {log} (rerun with --debug to see it); "
          "please report it", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
