"""Test handler: transform_fn mixed with input_fn, which the contract forbids."""


def input_fn(input_data, content_type):
    return input_data


def transform_fn(model, input_data, content_type, accept):
    return input_data
