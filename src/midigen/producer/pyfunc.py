"""The MLflow pyfunc model, logged as models-from-code (no pickled object in the artifact).

`mlflow.pyfunc.load_model(uri).predict(request)` takes a dict (or a one-row DataFrame)
of `midigen generate` options - num, bars, events, bpm, temperature, top_k, top_p,
style ({"chorale": 0.6}), key, scale, seed, note_range ([36, 99]), repetition_penalty,
max_note_beats, velocity, name - and returns a DataFrame with one row per file: `name`
and `midi` (the file's bytes), identical to the CLI's files for the same seed.
The package travels with the model (`code_paths`), so it loads where midigen is not installed.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class MidigenPyfunc(PythonModel):
    def load_context(self, context) -> None:  # noqa: ANN001
        from midigen.producer.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        import pandas as pd

        from midigen.producer.generate import GenerateRequest, generate_batch

        if isinstance(model_input, pd.DataFrame):
            request = model_input.iloc[0].dropna().to_dict() if len(model_input) else {}
        else:
            request = dict(model_input or {})
        request.update(params or {})
        if "note_range" in request:
            request["note_range"] = tuple(int(v) for v in request["note_range"])
        for key in ("num", "bars", "events", "seed", "top_k", "velocity"):
            if key in request and request[key] is not None:
                request[key] = int(request[key])
        known = set(GenerateRequest.__dataclass_fields__)
        results = generate_batch(self.bundle, GenerateRequest(**{k: v for k, v in request.items() if k in known}))
        return pd.DataFrame({"name": [r["name"] for r in results], "midi": [r["midi"] for r in results]})


mlflow.models.set_model(MidigenPyfunc())
