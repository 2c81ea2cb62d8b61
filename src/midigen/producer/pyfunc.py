"""The MLflow pyfunc model, logged as models-from-code (no pickled object in the artifact).

`mlflow.pyfunc.load_model(uri).predict(request)` takes a dict (or a one-row DataFrame)
of `midigen generate` options (the fields of `midigen.producer.request.GenerateRequest`:
num, bars, events, bpm, temperature, top_k, top_p, style_strength, style ("chorale", "chorale=0.6,fiddle=0.4"
or {"chorale": 0.6}), key, scale, seed, note_range ([36, 84] or "36-84"), voices, start,
repetition_penalty, max_note_beats, velocity, name, ...) and returns a DataFrame with one row per file: `name`
and `midi` (the file's bytes), identical to the CLI's files for the same seed.
The package travels with the model (`code_paths`), so it loads where midigen is not installed.

Logged with a signature (`midigen.train.registration.signature`), MLflow checks a call before
`predict` sees it: the input is an optional `primer` (a MIDI clip as base64 text, decoded to a
temporary file by `primer_file`), every other field an inference param with its type and
default: `predict({}, params={"num": 4, "bars": 8, "seed": 7})`, or served, `{"inputs": {},
"params": {...}}`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.pyfunc import PythonModel


class MidigenPyfunc(PythonModel):
    def load_context(self, context) -> None:  # noqa: ANN001
        from midigen.producer.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        """A request (a dict, or a one-row DataFrame) -> a DataFrame of `name` and `midi` (bytes).

        Every field is parsed and checked by `GenerateRequest.from_fields`: an unknown key, a
        wrong type or an impossible value is an MlflowException naming the field (a 400 when served)."""
        import pandas as pd
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from midigen.errors import MidigenError
        from midigen.producer.generate import generate_batch
        from midigen.producer.request import GenerateRequest

        if isinstance(model_input, pd.DataFrame):
            if len(model_input) > 1:
                raise MlflowException("send one request (one row) per call", INVALID_PARAMETER_VALUE)
            request = model_input.iloc[0].dropna().to_dict() if len(model_input) else {}
        else:
            request = dict(model_input or {})
        request.update(params or {})
        request = explicit_fields(request)
        try:
            with primer_file(request) as request:
                results = generate_batch(self.bundle, GenerateRequest.from_fields(request))
        except MidigenError as exc:
            raise MlflowException(str(exc), INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame({"name": [r["name"] for r in results], "midi": [r["midi"] for r in results]})


def explicit_fields(request: dict) -> dict:
    """`request` without the values that are the request's defaults anyway. A logged model's
    signature makes MLflow fill in every param's default before `predict` runs, and a
    filled-in `bars` would clash with a given `events`."""
    from dataclasses import fields

    from midigen.producer.request import GenerateRequest

    defaults = {f.name: f.default for f in fields(GenerateRequest)}
    return {k: v for k, v in request.items()
            if not (k in defaults and (v is None or (type(v) is type(defaults[k]) and v == defaults[k])))}


MIDI_BASE64 = "TVRoZ"  # how base64 text of a MIDI file ("MThd...") starts


@contextmanager
def primer_file(request: dict):  # noqa: ANN201 - yields the request with `primer` a file path
    """`request` with its `primer` as a path, as `GenerateRequest` takes it. A served request
    carries the clip itself, as base64 text (bytes from Python), written to a temporary file
    that is removed when the request is done. A path stays a path in-process; a served model
    reads no paths (a client would be naming the server's files)."""
    import base64
    import binascii
    import tempfile

    from midigen.errors import MidigenError
    from midigen.producer.request import RequestError

    primer = request.get("primer")
    if primer in ("", "None"):  # a JSON null reaches a served model's text input as "None"
        request, primer = {k: v for k, v in request.items() if k != "primer"}, None
    serving = os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() == "true"  # set by MLflow's server
    if isinstance(primer, str) and primer.lstrip().startswith(MIDI_BASE64):
        try:
            primer = base64.b64decode(primer)
        except (binascii.Error, ValueError):
            raise RequestError("primer", None, "not base64 text of a MIDI file", flag=False) from None
    if not isinstance(primer, (bytes, bytearray)):
        if primer is not None and serving:
            raise RequestError("primer", None, "send the MIDI clip itself, as base64 text (a served model "
                                               "reads no paths)", flag=False)
        yield request
        return
    if bytes(primer[:4]) != b"MThd":
        raise RequestError("primer", None, "not a MIDI file (send its bytes as base64 text)", flag=False)
    with tempfile.TemporaryDirectory(prefix="midigen-primer-") as folder:
        path = Path(folder) / "primer.mid"
        path.write_bytes(bytes(primer))
        try:
            yield {**request, "primer": str(path)}
        except MidigenError as exc:  # the temporary file means nothing to the caller
            raise MidigenError(str(exc).replace(str(path), "(the clip sent)")) from None


mlflow.models.set_model(MidigenPyfunc())
