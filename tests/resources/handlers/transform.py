"""Test handler: transform_fn alone, without a context."""


def transform_fn(model, input_data, content_type, accept):
    text = input_data.decode("utf-8")
    return f"{len(text)},{content_type},{accept}", "text/csv"
