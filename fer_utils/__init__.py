"""fer_utils: the library behind the FER2013 reproduction notebooks, and a small API to use its model.

    from fer_utils import ExpressionRecognizer
    faces = ExpressionRecognizer().predict("photo.jpg")   # box, label, probabilities, detector score

The recognizer (the base install, ``pip install fer_utils``: numpy, OpenCV, ONNX Runtime, Pillow,
pandas, tqdm; it imports nothing of the lab below, and needs no TensorFlow, Keras or scikit-learn):

- ``model_file``: which ONNX file runs (a path, or a released model by name: ``fer2013``, ``ferplus``),
  its class names (ONNX metadata) and model card, ``OnnxClassifier`` (ONNX Runtime);
- ``media``: photos, videos, cameras and folders in, annotated videos out;
- ``detection``: face detectors (Haar; MTCNN with the ``mtcnn`` extra) and tracking;
- ``recognizer``: crop to 48x48 gray, classify, draw; the frame loop with FPS and latency;
- ``api``: ``ExpressionRecognizer`` (photos, batches, videos to a table) and ``plot_timeline``;
- ``cli``: ``python -m fer_utils.cli predict|run|make-clip`` (``fer-predict``);
- ``saliency``: occlusion maps and LIME from a model's outputs alone;
- ``samples``: the sample photo and the test clip made from it (scikit-image);
- ``app``: the Streamlit browser app (``make app``; the ``app`` extra);
- ``extras``: the one-line message naming the extra that a missing optional package comes with.

``config``, ``files`` and ``progress`` are shared. The lab, one module per pipeline stage (the
``train`` and ``notebooks`` extras):

- ``config``: class names, splits, paths, profiles, seeding;
- ``data``: loading both FER2013 layouts, cache, fingerprint, duplicate audit;
- ``synthetic``: the procedurally generated stand-in dataset;
- ``eda``: exploratory statistics;
- ``balance``: class balancing of the training split (imbalanced-learn, augmentation, weights);
- ``models``: model builders (raw 48x48 faces in, class probabilities out: FER2013's 7, or FER+'s 8);
- ``train``: the shared, resumable ``fit`` and ``train_and_evaluate`` (a dataset, a config and a ``runs.RunStore`` in, a ``runs.RunRecord`` out);
- ``vgg``: the VGGNet recipes and the results tables of notebooks 04, 06 and 11 (notebook 04);
- ``ensemble``: softmax-average ensembles of trained models (notebook 06);
- ``leakage``: resampling with parents and the leakage audit of write-up 003's protocol (notebook 11);
- ``transfer``: keras.applications backbones, ResNet-18 and a small ViT, frozen or fine-tuned (notebook 05);
- ``champion``: the project's best CPU model, its recipe and throughput measurement (notebook 12);
- ``ferplus``: the champion trained on FER+'s ten-annotator votes (8 classes), its release, and the
  default-model rule (notebook 13);
- ``evaluate``: metrics, metrics files, the summary table;
- ``align``: MTCNN face alignment (rotate the eye line level, crop, resize), cached per dataset;
- ``explain``: LIME and Grad-CAM for any Keras model of the project;
- ``export``: Keras to ONNX, parity, simplification, int8 quantization, latency benchmark, release (notebook 09);
- ``webcam``: notebook 10's study of the recognizer (frame rate by detector, the ``fer`` package, inline display);
- ``plots``: figures;
- ``notebook``: the set-up every notebook shares;
- ``pipeline``: runs the notebooks with papermill (``make all``);
- ``gpu``: the ``full`` profile on a borrowed GPU host with JAX only (pack, train there, collect here).

Heavy modules (``models``, ``train``) import Keras, on TensorFlow unless ``KERAS_BACKEND`` names
another backend (training runs on JAX too); ``data`` and ``synthetic`` do not.
"""

__version__ = "0.1.0"
__all__ = ["ExpressionRecognizer", "plot_timeline"]


def __getattr__(name: str):
    """``ExpressionRecognizer`` and ``plot_timeline`` from :mod:`fer_utils.api`, imported on
    first use (so that ``import fer_utils.data`` does not load OpenCV and ONNX Runtime)."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'fer_utils' has no attribute {name!r}")
