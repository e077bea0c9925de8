"""Command line: facial expressions in image files, a video or a webcam, with an ONNX model.

    python -m fer_utils.cli predict IMAGE|FOLDER... [--format json|csv] [--detector haar|mtcnn] [--whole]
    python -m fer_utils.cli run --source 0|clip.mp4|FOLDER [--out annotated.mp4] [--csv frames.csv]
                                [--detector haar|mtcnn] [--detect-every N] [--tracker template|mil|hold]
                                [--max-frames N] [--seconds S] [--no-show]
    python -m fer_utils.cli make-clip clip.mp4 [--frames N]     (a test clip from a real face photo)

Every command takes ``--model NAME|PATH``: a released model by name, ``fer2013`` (trained on
FER2013's labels, seven classes) or ``ferplus`` (trained on FER+'s ten-annotator votes, eight
classes: FER2013's seven and contempt), or any ONNX file exported by ``fer_utils.export``; the
default is the released model the default-model rule of docs/release.md picks. The class names
come from the model file, so the outputs have one probability per class of the model.
Installed as the console script ``fer-predict``. Both commands run through
``fer_utils.api.ExpressionRecognizer``, the Python API, so they give its answers.

``predict`` reads each image (a folder stands for every image in it and its subfolders) and
prints one JSON entry per image (``--format csv``: one row per face): each face has ``box``
(x, y, width, height in pixels), ``label``, the model's ``probabilities`` (summing to 1) and
``detector_score``, the face detector's confidence that the box is a face (not about the
expression): for the Haar cascade the number of raw detections merged into the box (a whole
number above 5, no fixed maximum, higher is surer), for MTCNN its face probability (0.9-1), and
1 for an image taken whole as one face. With more than one image it shows a progress bar (on a
terminal) and ends with a summary line on stderr. ``run --csv`` writes the same face columns
for every frame (``frame``, ``time_s`` first; a frame without a face has one ``no face`` row).

Each problem prints one line starting with ``error:`` on stderr (never a traceback), and the
exit status says how it went:

    0    ok; a photo without a face is a result too ("no face" in the output, a note on stderr)
    1    partial: some inputs failed (each has its error line), the others were processed
    2    bad input or bad model: nothing could be processed (a missing or damaged file, a folder
         without images, an --out or --csv path that cannot be written, an ONNX file that is not
         a FER probability model over the classes its metadata names, an invalid option)
    3    an unexpected internal error: the traceback goes to a log file named on stderr
         (``--debug`` prints it instead)
    4    an optional dependency is missing (``--detector mtcnn`` needs the ``mtcnn`` extra,
         ``make-clip`` scikit-image from the ``app`` extra): the error line names the extra,
         e.g. ``pip install "fer_utils[mtcnn]"``
    130  interrupted (Ctrl+C); a partial video of a file or folder is not kept

Limits: images up to 50 megapixels (``media.MAX_PIXELS``, checked before decoding) and at
least 24x24 pixels (``media.MIN_FACE_SIDE``: smaller is not taken as a face); ``--margin``
0-1; ``--out`` must end in .mp4, .avi or .y4m and ``--csv`` in .csv; both are checked before the
model loads. Files are written atomically: a failed or interrupted run leaves neither a partial
nor a temporary file (from a camera, what was recorded before Ctrl+C is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

from .api import ExpressionRecognizer, FrameTable, batch_summary, results_table
from .extras import MissingExtra
from .files import atomic_path
from .media import SourceError, check_output_path, check_video_path, has_display
from .model_file import DEFAULT_MODEL, RELEASED_MODELS, ModelFileError
from .samples import make_test_clip

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_INTERNAL, EXIT_MISSING_EXTRA, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
NO_FACE_NOTE = ("no face found (the detector looks for frontal, upright faces; --detector mtcnn finds turned ones, "
                "--whole takes the image as one face)")


def _recognizer(args) -> ExpressionRecognizer:
    return ExpressionRecognizer(args.model, args.detector, threads=args.threads, margin=args.margin)


def _predict(args) -> int:
    recognizer = _recognizer(args)
    batch = len(args.images) > 1 or any(Path(name).is_dir() for name in args.images)
    results = recognizer.predict_many(args.images, whole=True if args.whole else None,
                                      progress=batch and sys.stderr.isatty())
    entries = []
    for result in results:
        entries.append(result.as_dict())
        if result.error is not None:
            print(f"error: {result.error}", file=sys.stderr)
        elif not result.faces:
            entries[-1]["note"] = NO_FACE_NOTE
            print(f"note: {result.image}: {NO_FACE_NOTE}", file=sys.stderr)
    sys.stdout.write(json.dumps(entries, indent=2) + "\n" if args.format == "json" else
                     results_table(results, recognizer.class_names).to_csv(index=False, lineterminator="\n"))
    if batch:
        print(f"summary: {batch_summary(results)}", file=sys.stderr)
    failed = sum(r.error is not None for r in results)
    if failed == len(results):
        return EXIT_ERROR
    return EXIT_PARTIAL if failed else EXIT_OK


def _run(args) -> int:
    if args.out:  # both checked before the model loads and any frame is processed
        check_video_path(args.out)
    if args.csv:
        check_output_path(args.csv, (".csv",), "table", "frames.csv")
    show = has_display() and not args.no_show
    if not show and not args.out and not args.csv and not args.no_show:
        print("note: no display here, so no window; add --out annotated.mp4 to save the annotated video "
              "or --csv frames.csv for the table of expressions", file=sys.stderr)
    recognizer = _recognizer(args)
    table = FrameTable(recognizer.class_names) if args.csv else None
    source = int(args.source) if args.source.strip().isdigit() else args.source
    result = recognizer.run_video(source, args.detect_every, args.tracker, out=args.out, show=show,
                                  max_frames=args.max_frames, seconds=args.seconds, on_frame=table,
                                  progress=sys.stderr.isatty())
    for problem in result.skipped:
        print(f"error: {problem}", file=sys.stderr)
    if result.frames == 0 and result.stopped != "interrupted":
        raise SourceError(f"{result.source}: no frame could be read" + ("; no video written" if args.out else ""))
    interrupted = result.stopped == "interrupted"
    written = None
    if table is not None and result.frames and (isinstance(source, int) or not interrupted):  # a camera's is kept
        with atomic_path(args.csv, suffix=".csv") as tmp:
            table.to_frame().to_csv(tmp, index=False)
        written = args.csv
    print(f"source: {result.source}\ndetector: {result.detector}\n"
          f"frames: {result.frames} ({result.frames_with_face} with a face, {result.faces} faces; {result.stopped})\n"
          f"FPS (wall clock, everything included): {result.fps:.1f}")
    if result.frames:
        print(result.stats.table().round(2).to_string())
    if result.video:
        print(f"annotated video: {result.video}")
    if written:
        print(f"table of expressions ({len(table.rows)} rows): {written}")
    if interrupted:
        for path, done in ((args.out, result.video), (args.csv, written)):
            if path and not done:
                print(f"interrupted: {path} not written (a partial result of a file is not kept)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_PARTIAL if result.skipped else EXIT_OK


def _make_clip(args) -> int:
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
    common.add_argument("--model", default=None, metavar="NAME|PATH",
                        help=f"a released model by name ({', '.join(RELEASED_MODELS)}: trained on FER2013's labels or on "
                             f"FER+'s votes) or an ONNX file (default: {DEFAULT_MODEL}, by the default-model rule)")
    common.add_argument("--detector", choices=("haar", "mtcnn"), default="haar",
                        help="face detector: haar (fast, default) or mtcnn (accurate, slow, levels the eyes; the mtcnn "
                             "extra: mtcnn and TensorFlow)")
    common.add_argument("--margin", type=_number(float, 0.0, 1.0), default=0.1,
                        help="border added around a detected face (share of its side, 0-1)")
    common.add_argument("--threads", type=_number(int, 1), default=None,
                        help="ONNX Runtime intra-op threads (default: its own)")
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser("predict", parents=[common], help="expressions of the faces in image files")
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="image files, or folders (every image in them and their subfolders)")
    predict.add_argument("--format", choices=("json", "csv"), default="json")
    predict.add_argument("--whole", action="store_true",
                         help="treat each image as one face crop, no detection (automatic for images up to 64 px)")
    predict.set_defaults(func=_predict)

    run = commands.add_parser("run", parents=[common], help="a webcam or a video, annotated live")
    run.add_argument("--source", required=True, help="camera index (0), a video file or a folder of images")
    run.add_argument("--out", default=None, help="write the annotated video here (.mp4, .avi or .y4m)")
    run.add_argument("--csv", default=None, metavar="FRAMES.csv",
                     help="write one row per frame and face here: frame, time_s, box, detector_score, label, "
                          "one probability per class of the model")
    run.add_argument("--detect-every", type=_number(int, 1), default=1, metavar="N",
                     help="detect faces every N frames, track in between")
    run.add_argument("--tracker", choices=("template", "mil", "hold"), default="template",
                     help="how faces are followed between detections")
    run.add_argument("--max-frames", type=_number(int, 1), default=None, metavar="N", help="stop after N frames")
    run.add_argument("--seconds", type=_number(float, 0.01), default=None, metavar="S",
                     help="stop after S seconds of video (of a camera: of wall clock)")
    run.add_argument("--no-show", action="store_true", help="no window, even where a display exists")
    run.set_defaults(func=_run)

    clip = commands.add_parser("make-clip", parents=[debug], help="write a test clip made from a real face photo")
    clip.add_argument("output", help="video file to write (.mp4, .avi, or .y4m for Chromium's fake camera)")
    clip.add_argument("--frames", type=_number(int, 1), default=90)
    clip.add_argument("--fps", type=_number(float, 1.0, 240.0), default=15.0)
    clip.set_defaults(func=_make_clip)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fer_utils.cli`` and the ``fer-predict`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ModelFileError, SourceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MissingExtra as exc:  # one line naming the extra to install
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
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
