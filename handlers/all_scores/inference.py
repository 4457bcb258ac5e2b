"""Example handler: every label with its probability, for each input.

Copy this file to ``code/inference.py`` inside the model artifact. Requests stay the default
JSON (``{"inputs": "text"}`` or a list); the answer is, per input, the list of all labels
sorted by score, e.g. ``[[{"label": "spam", "score": 0.97}, {"label": "ham", "score": 0.03}]]``
for a list of inputs (for a lone string, the Hugging Face pipeline's shape: the list itself).
"""

from smneuron.serving.handler import default_predict_fn


def predict_fn(data, model, context):
    labels = len(model.manifest.labels) or 2
    data.parameters = {**data.parameters, "top_k": labels}
    return default_predict_fn(data, model, context)
