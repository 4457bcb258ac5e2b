"""Test handler written as the Hugging Face inference toolkit teaches: input_fn returns the
decoded JSON dict ({"inputs": ..., "parameters": ...}), the default predict_fn runs it."""

import json


def input_fn(input_data, content_type):
    return json.loads(input_data)
