"""Command line: facial expressions in image files, a video or a webcam, with an ONNX model.

    python -m fer_utils.cli predict IMAGE... [--format json|csv] [--detector haar|mtcnn] [--whole]
    python -m fer_utils.cli run --source 0|clip.mp4|FOLDER [--out annotated.mp4] [--detector haar|mtcnn]
                                [--detect-every N] [--tracker template|mil|hold] [--max-frames N] [--no-show]
    python -m fer_utils.cli make-clip clip.mp4 [--frames N]     (a test clip from a real face photo)

Every command takes ``--model PATH`` (default: the released ``models/fer_champion.onnx``).
Bad input (a missing model, no camera, an unreadable video or image) prints one line starting
with ``error:`` and exits with status 2 (1 when only some images failed); never a traceback.
Installed as the console script ``fer-predict``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from .config import CLASS_NAMES

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR = 0, 1, 2


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
            results.append({"image": name, "width": int(image.shape[1]), "height": int(image.shape[0]), "faces": faces})
        except SourceError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            results.append({"image": name, "error": str(exc), "faces": []})
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
    from .realtime import Recognizer, has_display, run_pipeline

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
    print(f"source: {result.source}\ndetector: {recognizer.description}\n"
          f"frames: {result.frames} ({result.frames_with_face} with a face, {result.faces} faces; {result.stopped})\n"
          f"FPS (wall clock, everything included): {result.fps:.1f}")
    print(result.stats.table().round(2).to_string())
    if result.video:
        print(f"annotated video: {result.video}")
    return EXIT_OK


def _make_clip(args) -> int:
    from .realtime import make_test_clip

    make_test_clip(args.frames, path=args.output, fps=args.fps)
    print(f"wrote {args.output} ({args.frames} frames, 640x480, {args.fps:g} fps)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fer-predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=None,
                        help="ONNX model (default: models/fer_champion.onnx, the released model)")
    common.add_argument("--detector", choices=("haar", "mtcnn"), default="haar",
                        help="face detector: haar (fast, default) or mtcnn (accurate, slow, levels the eyes)")
    common.add_argument("--margin", type=float, default=0.1,
                        help="border added around a detected face (share of its side)")
    common.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
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
    run.add_argument("--detect-every", type=int, default=1, metavar="N",
                     help="detect faces every N frames, track in between")
    run.add_argument("--tracker", choices=("template", "mil", "hold"), default="template",
                     help="how faces are followed between detections")
    run.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    run.add_argument("--no-show", action="store_true", help="no window, even where a display exists")
    run.set_defaults(func=_run)

    clip = commands.add_parser("make-clip", help="write a test clip made from a real face photo")
    clip.add_argument("output", help="video file to write (.mp4)")
    clip.add_argument("--frames", type=int, default=90)
    clip.add_argument("--fps", type=float, default=15.0)
    clip.set_defaults(func=_make_clip)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fer_utils.cli`` and the ``fer-predict`` console script."""
    args = build_parser().parse_args(argv)
    from .export import ModelFileError
    from .realtime import SourceError

    try:
        return args.func(args)
    except (ModelFileError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
