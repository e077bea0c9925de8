"""Training on another Keras 3 backend: a short fit under JAX on the CPU, loaded under TensorFlow."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fer_utils import config

keras = config.import_keras()

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")


@pytest.mark.slow
def test_a_model_trained_under_jax_loads_under_tensorflow(tmp_path):
    script = textwrap.dedent(f"""
        import importlib.abc
        import sys

        class NoTensorFlow(importlib.abc.MetaPathFinder):  # as on the GPU host: TensorFlow cannot be imported
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "tensorflow":
                    raise ImportError(f"No module named {{name!r}}")

        sys.meta_path.insert(0, NoTensorFlow())
        import numpy as np
        from fer_utils import models
        from fer_utils.synthetic import make_synthetic_fer
        from fer_utils.train import TrainConfig, fit, save_model, machine_description
        ds = make_synthetic_fer(400, seed=0)
        cfg = TrainConfig(epochs=2, batch_size=64, patience=None, augment="standard", crop=40, tta="flip",
                          class_weight={{i: 1.0 + i / 10 for i in range(7)}})
        result = fit(lambda **kw: models.build("cnn_small", **kw), *ds.split("Training"), *ds.split("PublicTest"),
                     cfg, r"{tmp_path / 'work'}", verbose=0)
        save_model(result.model, r"{tmp_path / 'jax.keras'}")
        np.save(r"{tmp_path / 'jax_proba.npy'}", result.model.predict(ds.split("PrivateTest")[0], verbose=0))
        print("backend", machine_description()["backend"], "epochs", result.epochs)
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backend jax epochs 2" in done.stdout
    from fer_utils import export
    from fer_utils.synthetic import make_synthetic_fer

    model = export.load_keras_model(tmp_path / "jax.keras")  # here: TensorFlow
    faces = make_synthetic_fer(400, seed=0).split("PrivateTest")[0]
    np.testing.assert_allclose(model.predict(faces, verbose=0), np.load(tmp_path / "jax_proba.npy"), atol=1e-4)
