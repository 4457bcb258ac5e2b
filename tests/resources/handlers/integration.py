"""Test handler for the server tests: a slow load, a raising request and a 7 MB answer.

parameters.raise -> predict_fn raises (500); parameters.large -> a ~7 MB response.
"""

import time

from smneuron.serving.handler import default_model_fn, default_predict_fn

LOAD_DELAY_S = 3.0


def model_fn(model_dir, context):
    time.sleep(LOAD_DELAY_S)  # long enough for /ping to be seen answering 503
    return default_model_fn(model_dir, context)


def predict_fn(data, model, context):
    if data.parameters.get("raise"):
        raise RuntimeError("secret internal detail that must not reach the client")
    if data.parameters.get("large"):
        return [{"label": "x" * 1000, "score": float(i)} for i in range(7 * 1024)]
    return default_predict_fn(data, model, context)
