"""Test handler: predict_fn takes a context, output_fn does not."""

import json

from smneuron.serving.handler import default_predict_fn


def predict_fn(data, model, context):
    results = default_predict_fn(data, model, context)
    return {
        "results": results,
        "worker": context.worker_index,
        "attributes": context.custom_attributes,
        "content_type": context.content_type,
    }


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
