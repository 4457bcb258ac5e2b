"""Test handler: each hook raises the way user code does.

input_fn: a ValueError for a body "bad input" (-> 400 with its message).
predict_fn: the first text picks the failure: "boom" (RuntimeError -> 500), "unprocessable"
(HTTPError 422), "slow down" (ClientError with status 429), "boom-output" (output_fn raises).
"""

from smneuron.errors import ClientError, HTTPError
from smneuron.serving.codecs import decode
from smneuron.serving.handler import default_predict_fn


def input_fn(input_data, content_type):
    if input_data == b"bad input":
        raise ValueError("the body must be JSON with an 'inputs' field")
    return decode(input_data, content_type)


def predict_fn(data, model, context):
    first = data.texts[0]
    if first == "boom":
        raise RuntimeError("secret detail of a predict_fn bug")
    if first == "unprocessable":
        raise HTTPError(422, "inputs must be at least two words")
    if first == "slow down":
        raise ClientError("too many requests from this tenant", status_code=429)
    if first == "boom-output":
        return "boom-output"
    return default_predict_fn(data, model, context)


def output_fn(prediction, accept):
    if prediction == "boom-output":
        raise KeyError("secret detail of an output_fn bug")
    import json

    return json.dumps(prediction), "application/json"
