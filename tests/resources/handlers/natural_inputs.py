"""Test handler: input_fn returns what is natural for each content type, the default
predict_fn and output_fn do the rest.

text/plain -> a str; text/csv -> a list of str (one per line); application/x-count -> an int,
which the default predict_fn does not take (a 500 that names the types it takes).
"""


def input_fn(input_data, content_type):
    text = input_data.decode("utf-8")
    if content_type == "text/plain":
        return text
    if content_type == "text/csv":
        return [line for line in text.split("\n") if line]
    if content_type == "application/x-count":
        return len(text)
    raise ValueError(f"this endpoint reads text/plain or text/csv, not {content_type}")
