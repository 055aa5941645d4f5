"""A run's trained model as an MLflow pyfunc model, which ``mlflow.pyfunc.load_model`` loads back.

The MLflow model (``model/`` in the MLflow run's artifacts; ``model/<seed or job>`` for each of
several models) holds the run's ``manifest.json`` and ``model.safetensors`` as artifacts and
:class:`TLRoutesModel`, a :class:`mlflow.pyfunc.PythonModel` whose ``predict`` is
:meth:`tlroutes.use.Predictor.predict_frame`: a DataFrame with the label and ``p_<class>``
columns (or values for regression), one row per sample. Its input is what
:func:`tlroutes.load`'s predictor reads: a DataFrame of the feature columns (tables), or an array
of preprocessed samples. Loading it back needs tlroutes installed (the model's pip
requirement), nothing else: the weights are safetensors, the class is imported by name.

Example::

    import mlflow
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    frame = model.predict(x_test)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from tlroutes.errors import ConfigError, require_extra
from tlroutes.manifest import MANIFEST_FILE, find_manifests

try:  # the class must subclass MLflow's when MLflow is there; the module imports without it
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - the mlflow extra is missing
    PythonModel = object  # type: ignore[assignment,misc]

#: The artifact name of the logged model in the MLflow run.
MODEL_ARTIFACT = "model"


class TLRoutesModel(PythonModel):
    """The MLflow pyfunc face of a :class:`~tlroutes.use.Predictor` (see the module doc)."""

    def load_context(self, context: Any) -> None:
        from tlroutes.use.predictor import Predictor

        self.predictor = Predictor(context.artifacts["run"])

    def predict(self, context: Any, model_input: Any, params: dict | None = None) -> Any:
        import numpy as np

        data = model_input
        pre = next(iter(self.predictor.manifest["heads"].values()))["preprocessing"] or {}
        if type(data).__name__ == "DataFrame" and not pre.get("features"):
            # MLflow hands arrays over as DataFrames; samples with a shape are flattened rows
            data = np.asarray(data.to_numpy(), dtype=np.float32).reshape(
                len(data), *pre.get("input_shape", [-1]))
        return self.predictor.predict_frame(data)


def log_model(client: Any, run_id: str, run_dir: str | Path) -> list[str]:
    """Log every trained model of ``run_dir`` into the MLflow run ``run_id`` as a pyfunc model;
    returns the artifact paths (``model``, or ``model/<key>`` for each of several models).

    Raises:
        MissingExtraError: MLflow is not installed.
    """
    require_extra("mlflow", "mlflow", "logging the model to MLflow")
    import mlflow.pyfunc

    import tlroutes

    try:
        found = find_manifests(run_dir)
    except ConfigError:  # no trained model (or one from before manifests): nothing to log
        return []
    logged = []
    for key, folder in found.items():
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / "run"
            bundle.mkdir()
            manifest_weights = (MANIFEST_FILE, "model.safetensors")
            for name in manifest_weights:
                shutil.copy2(Path(folder) / name, bundle / name)
            saved = Path(tmp) / "pyfunc"
            mlflow.pyfunc.save_model(
                path=str(saved), python_model=TLRoutesModel(), artifacts={"run": str(bundle)},
                pip_requirements=[f"tlroutes=={tlroutes.__version__}"])
            artifact = MODEL_ARTIFACT if not key else f"{MODEL_ARTIFACT}/{key}"
            client.log_artifacts(run_id, str(saved), artifact_path=artifact)
            logged.append(artifact)
    return logged
