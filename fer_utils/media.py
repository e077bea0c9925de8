"""Media in and out: photos, videos, cameras and image folders in; annotated videos out.

Frames are OpenCV BGR uint8 ``(H, W, 3)`` arrays throughout. Sources (:func:`open_source`): a
webcam index, a video file, a folder of images, one image, or an in-memory list of frames.
Photos are decoded by :func:`decode_photo` (Pillow, EXIF orientation applied), what the CLI, the
API and the browser app all read images with, so they accept and refuse the same files. Sinks:
an annotated video file (:class:`VideoSink`: mp4v, MJPG or raw YUV, written atomically) and the
check that an output path can be written (:func:`check_output_path`). Bad input raises
:class:`SourceError`, with a message naming what is wrong.

The lowest layer of the recognizer: it imports nothing else of the project but ``config``.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import quiet_native_stderr

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
#: what :class:`VideoSink` writes: mp4v, MJPG, and uncompressed YUV 4:2:0 (.y4m, what Chromium's
#: ``--use-file-for-fake-video-capture`` plays as a fake camera)
VIDEO_SUFFIXES = (".mp4", ".avi", ".y4m")
FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".y4m": "I420"}
MAX_PIXELS = 50_000_000  #: largest image read, in pixels (checked from the header, before decoding)
MIN_FACE_SIDE = 24  #: smallest image taken as a face, in pixels per side (FER2013 faces are 48)


class SourceError(RuntimeError):
    """A frame source or sink cannot be used (no camera, unreadable video, ...); says which."""


def resize_to_width(image: np.ndarray, width: int | None) -> tuple[np.ndarray, float]:
    """``image`` shrunk to at most ``width`` pixels wide, and the factor (small / original)."""
    if not width or image.shape[1] <= width:
        return image, 1.0
    scale = width / image.shape[1]
    size = (width, max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def to_bgr_frame(frame: np.ndarray) -> np.ndarray:
    """A frame in OpenCV's order (BGR, gray or BGRA; any dtype, clipped to uint8) as BGR uint8
    ``(H, W, 3)``; :class:`SourceError` for another shape."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise SourceError(f"a frame must be (H, W), (H, W, 3) or (H, W, 4) pixels, got shape {frame.shape}")


# ---------------------------------------------------------------------------------------------
# Sources


class FrameSource:
    """Frames from a camera, a video file, images or memory: iterate for BGR frames.

    ``fps`` is the source's frame rate where known (else 15), ``length`` the frame count where
    known (else None), ``name`` says what it is. Use as a context manager (releases cameras).
    """

    def __init__(self, frames: Iterator[np.ndarray], name: str, fps: float = 15.0, length: int | None = None,
                 release: Callable[[], None] | None = None, live: bool = False):
        self._frames, self.name, self.fps, self.length, self._release = frames, name, fps, length, release
        self.live = live  #: a camera: no natural end, so stopping it by hand is how a run ends
        self.skipped: list[str] = []  #: "path: reason" of each image that could not be read

    def __iter__(self):
        return self._frames

    def close(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _quiet_opencv():
    """Lower OpenCV's own log level (camera probing prints warnings) and return the old one."""
    try:
        old = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        return old
    except AttributeError:
        return None


def _restore_opencv(level) -> None:
    if level is not None:
        cv2.utils.logging.setLogLevel(level)


def _capture_frames(capture: cv2.VideoCapture, first: np.ndarray) -> Iterator[np.ndarray]:
    yield first
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        yield frame


def _open_capture(target: int | str):
    """``cv2.VideoCapture(target)`` and its first frame, with OpenCV's and FFmpeg's native log
    lines silenced; the frame is None (and the capture released) when nothing could be read."""
    level = _quiet_opencv()
    try:
        with quiet_native_stderr():  # FFmpeg writes its complaints about broken files straight to stderr
            capture = cv2.VideoCapture(target)
            ok, first = capture.read() if capture.isOpened() else (False, None)
    finally:
        _restore_opencv(level)
    if not ok or first is None:
        capture.release()
        return capture, None
    return capture, first


def open_camera(index: int) -> FrameSource:
    """Webcam ``index`` as a source; :class:`SourceError` if there is none or it gives no frame."""
    capture, first = _open_capture(int(index))
    if first is None:
        raise SourceError(
            f"no camera at index {index}: OpenCV could not open it or read a frame (is a webcam connected, "
            "allowed and not used by another program? Without a camera, give a video file or an image folder)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    return FrameSource(_capture_frames(capture, first), f"camera {index}", fps if fps > 1 else 30.0, None,
                       capture.release, live=True)


def open_video(path: str | os.PathLike) -> FrameSource:
    """A video file as a source; :class:`SourceError` if missing or not decodable."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such video file")
    capture, first = _open_capture(str(path))
    if first is None:
        raise SourceError(f"{path}: not a readable video (OpenCV could not decode a frame from it)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 15.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    return FrameSource(_capture_frames(capture, first), str(path), fps if fps > 1 else 15.0, count, capture.release)


def check_face_size(width: int, height: int, name: str = "the image") -> None:
    """:class:`SourceError` when an image is too small to hold a face (under :data:`MIN_FACE_SIDE`
    pixels on a side): such an image is never labelled."""
    if min(width, height) < MIN_FACE_SIDE:
        raise SourceError(f"{name}: the image is {width}x{height} pixels, too small to hold a face "
                          f"(at least {MIN_FACE_SIDE}x{MIN_FACE_SIDE}; FER2013 faces are 48x48)")


def decode_photo(data: bytes | str | os.PathLike, name: str | None = None,
                 max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int], list[str]]:
    """An image (encoded bytes, or a file path) as RGB uint8 ``(H, W, 3)``, its size as stored
    ``(width, height)`` and notes; what the CLI and the app both read photos with.

    Raises :class:`SourceError` naming ``name`` (default: the path) and the reason: empty, not an
    image Pillow can read, over ``max_pixels`` (checked from the header, before decoding), under
    :data:`MIN_FACE_SIDE` pixels on a side, damaged or truncated. The EXIF orientation is applied
    (phone photos), any mode (gray, palette, RGBA, CMYK, 16-bit) becomes RGB (an animation gives
    its first frame).
    """
    is_bytes = isinstance(data, (bytes, bytearray))
    name = name or ("image" if is_bytes else str(data))
    if (len(data) if is_bytes else Path(data).stat().st_size) == 0:
        raise SourceError(f"{name}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data) if is_bytes else data)
    except UnidentifiedImageError:
        raise SourceError(f"{name}: not an image (JPEG, PNG, WebP, BMP, TIFF or GIF) that Pillow can read") from None
    except Exception as exc:  # noqa: BLE001  (Pillow's plugins raise many kinds)
        raise SourceError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise SourceError(f"{name}: the image is {width}x{height} ({width * height / 1e6:.0f} megapixels); "
                              f"the limit is {max_pixels / 1e6:.0f} megapixels: shrink it first")
        check_face_size(width, height, name)
        try:
            image = ImageOps.exif_transpose(image)  # loads the pixels too
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16/32-bit gray: scale to 8 bits
                values = np.asarray(image, dtype=np.float64)
                span = max(float(values.max() - values.min()), 1e-9)
                image = Image.fromarray(((values - values.min()) * (255.0 / span)).astype(np.uint8))
            rgb = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
        except Exception as exc:  # noqa: BLE001  (truncated or damaged files)
            raise SourceError(f"{name}: a damaged or truncated image ({type(exc).__name__}: {exc})") from None
    notes = []
    if (rgb.shape[1], rgb.shape[0]) != (width, height):
        notes.append(f"rotated as its EXIF orientation says ({width}x{height} -> {rgb.shape[1]}x{rgb.shape[0]})")
    return rgb, (width, height), notes


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A BGR image from disk (see :func:`decode_photo`); :class:`SourceError` naming the file if
    missing, a folder, unreadable, damaged, too large or too small."""
    path = Path(path)
    if path.is_dir():
        raise SourceError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise SourceError(f"{path}: no such image file")
    rgb, _, _ = decode_photo(path, str(path), max_pixels)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def image_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The image files (:data:`IMAGE_SUFFIXES`) in ``folder`` (and its subfolders if
    ``recursive``), sorted by path; hidden files (names starting with a dot) are left out."""
    found = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                  and p.is_file())


def open_images(paths: list[Path], name: str) -> FrameSource:
    """Image files as a source (read with :func:`read_image`); unreadable ones are skipped and
    listed in ``source.skipped`` (``"path: reason"``)."""
    source = FrameSource(iter(()), name, 5.0, len(paths))

    def frames():
        for path in paths:
            try:
                yield read_image(path)
            except SourceError as exc:
                source.skipped.append(str(exc))

    source._frames = frames()
    return source


def open_source(source) -> FrameSource:
    """A frame source from a webcam index (``0`` or ``"0"``), a video file, an image file, a
    folder of images, or a list/array of frames (BGR or gray uint8)."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (int, np.integer)) or (isinstance(source, str) and source.strip().isdigit()):
        return open_camera(int(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            images = image_files(path)
            if not images:
                raise SourceError(f"{path}: a folder without images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            return open_images(images, f"{path} ({len(images)} images)")
        if not path.exists():
            raise SourceError(f"{path}: no such file or folder "
                              "(a source is a camera index, a video, an image or a folder)")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return open_images([path], str(path))
        return open_video(path)
    if isinstance(source, np.ndarray) and source.ndim in (2, 3) and source.dtype == np.uint8 and \
            (source.ndim == 2 or source.shape[-1] in (3, 4)) and source.shape[0] > 8:
        source = [source]  # one frame
    frames = list(source)
    if not frames:
        raise SourceError("an empty list of frames")
    return FrameSource(iter(frames), f"{len(frames)} frames in memory", 15.0, len(frames))


# ---------------------------------------------------------------------------------------------
# Sinks


def has_display() -> bool:
    """Whether an OpenCV window can open (a desktop session on Windows/macOS, $DISPLAY or
    $WAYLAND_DISPLAY on Linux)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...], what: str, example: str) -> Path:
    """``path`` if a ``what`` file (e.g. "video") can be written there, else :class:`SourceError`
    saying why: a name not ending in one of ``suffixes``, an existing folder (the message suggests
    ``path/example``), a folder on the way that is a file, or a folder without write permission.
    Checked before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise SourceError(f"{path}: is a folder; name the {what} file to write, e.g. {path / example}")
    if path.suffix.lower() not in suffixes:
        raise SourceError(f"{path}: a {what} file name must end in {' or '.join(suffixes)}")
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise SourceError(f"{path}: cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK):
        raise SourceError(f"{path}: cannot be written: no permission to write in {existing}")
    return path


def check_video_path(path: str | os.PathLike) -> Path:
    """:func:`check_output_path` for an annotated video (:data:`VIDEO_SUFFIXES`)."""
    return check_output_path(path, VIDEO_SUFFIXES, "video", "annotated.mp4")


class VideoSink:
    """Writes BGR frames to an mp4 (mp4v), avi (MJPG) or y4m (raw YUV 4:2:0) file, atomically (temp file, renamed on
    close; :meth:`abort` or a failed close removes it). The path is checked on creation
    (:func:`check_video_path`)."""

    def __init__(self, path: str | os.PathLike, fps: float = 15.0):
        self.path, self.fps = check_video_path(path), float(fps)
        self.tmp = self.path.with_name(self.path.stem + ".tmp" + self.path.suffix)
        self.writer, self.frames, self.size = None, 0, None

    def write(self, frame: np.ndarray) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (frame.shape[1], frame.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            with quiet_native_stderr():  # FFmpeg notes that y4m has no codec tag (it writes raw I420 all the same)
                self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                self.writer = None
                raise SourceError(f"{self.path}: OpenCV cannot write a video there (use {' or '.join(VIDEO_SUFFIXES)})")
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size)
        self.writer.write(to_bgr_frame(frame))
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; returns its path (None if no frame was written)."""
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        return self.path

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


def write_video(frames, path: str | os.PathLike, fps: float = 15.0) -> Path:
    """Write BGR frames to a video file (mp4v), atomically; returns the path."""
    sink = VideoSink(path, fps)
    try:
        for frame in frames:
            sink.write(frame)
    except BaseException:
        sink.abort()
        raise
    out = sink.close()
    if out is None:
        raise SourceError(f"{path}: no frames to write")
    return out


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> list[np.ndarray]:
    """All (or the first ``max_frames``) BGR frames of a video file."""
    with open_video(path) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if max_frames and len(frames) >= max_frames:
                break
    return frames
