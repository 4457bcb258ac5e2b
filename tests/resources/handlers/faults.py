"""Test handler for the fault tests: parameters.sleep -> predict_fn sleeps that many seconds.

Used to keep a request in flight while a worker is killed or the server gets SIGTERM.
"""

import time

from smneuron.serving.handler import default_model_fn, default_predict_fn


def model_fn(model_dir, context):
    return default_model_fn(model_dir, context)


def predict_fn(data, model, context):
    # Our own parameter: taken out, since the task refuses parameters it does not know.
    delay = float(data.parameters.pop("sleep", 0))
    if delay:
        time.sleep(min(delay, 20.0))
    return default_predict_fn(data, model, context)
