"""Example handler: CSV in, CSV out, for batch transform over a CSV file.

Copy this file to ``code/inference.py`` inside the model artifact. The request is a CSV body
with the text in the first column (a header row ``text`` is skipped); the answer is one row
per input: ``text,label,score``.
"""

import csv
import io

from smneuron.errors import UnsupportedContentType
from smneuron.serving.codecs import decode_csv


def input_fn(input_data, content_type):
    if content_type != "text/csv":
        raise UnsupportedContentType(f"this endpoint reads text/csv, not {content_type!r}")
    return decode_csv(input_data)


def predict_fn(data, model):
    prediction = model.predict(data.texts, data.parameters)
    return list(zip(data.texts, prediction.results, strict=True))


def output_fn(prediction, accept):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for text, result in prediction:
        writer.writerow([text, result["label"], f"{result['score']:.6f}"])
    return out.getvalue(), "text/csv"
