"""A fake ``optimum.neuron`` that records calls; its names and arguments follow the real
``NeuronModelForCausalLM`` (``from_pretrained(model_id, export=True, batch_size=,
sequence_length=, num_cores=, auto_cast_type=)`` then ``save_pretrained(directory)``;
``from_pretrained(directory)`` then ``generate(input_ids, attention_mask=, **kwargs)``) and
``NeuronModelForSeq2SeqLM`` (``from_pretrained(model_id, export=True, batch_size=,
sequence_length=, num_beams=, auto_cast=, auto_cast_type=, tensor_parallel_size=,
dynamic_batch_size=)``, whose ``save_pretrained`` writes an ``encoder/`` and a ``decoder/``;
``from_pretrained(directory)`` then ``generate(input_ids, attention_mask=, generation_config=,
stopping_criteria=, **kwargs)`` over the static batch and encoder length)."""

from __future__ import annotations

import json
import os
from pathlib import Path

CALLS = os.environ.get("FAKE_OPTIMUM_CALLS", "")


def _record(call: dict) -> None:
    if CALLS:
        with open(CALLS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(call) + "\n")


class NeuronModelForCausalLM:
    """Export: the eager checkpoint is "compiled" by saving it with the neuron shapes in its
    config.json. Load: the saved model comes back, and ``generate`` checks the static shapes
    as the real one does, records the call, then runs the eager Hugging Face ``generate``."""

    def __init__(self, model_id: str, shapes: dict, model=None) -> None:
        self.model_id = model_id
        self.shapes = shapes
        self.model = model

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        export: bool = False,
        batch_size: int | None = None,
        sequence_length: int | None = None,
        num_cores: int | None = None,
        auto_cast_type: str | None = None,
    ) -> NeuronModelForCausalLM:
        import transformers

        if not export:
            config = json.loads((Path(model_id) / "config.json").read_text())
            _record({"call": "from_pretrained", "model_id": model_id, "export": False})
            model = transformers.AutoModelForCausalLM.from_pretrained(model_id).eval()
            return cls(model_id, config["neuron"], model)
        shapes = {
            "export": export,
            "batch_size": batch_size,
            "sequence_length": sequence_length,
            "num_cores": num_cores,
            "auto_cast_type": auto_cast_type,
        }
        _record({"call": "from_pretrained", "model_id": model_id, **shapes})
        model = transformers.AutoModelForCausalLM.from_pretrained(model_id).eval()
        return cls(model_id, shapes, model)

    def save_pretrained(self, save_directory: str) -> None:
        _record({"call": "save_pretrained", "save_directory": save_directory})
        target = Path(save_directory)
        target.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(target)
        config = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**config, "neuron": self.shapes}))

    def generate(self, input_ids, attention_mask=None, generation_config=None, **kwargs):
        import torch

        batch, length = input_ids.shape
        if length > self.shapes["sequence_length"]:
            raise ValueError(
                f"The input sequence length ({length}) exceeds the model static sequence "
                f"length ({self.shapes['sequence_length']})"
            )
        if batch > self.shapes["batch_size"]:
            raise ValueError(
                f"The specified batch_size ({batch}) exceeds the model static batch size "
                f"({self.shapes['batch_size']})"
            )
        simple = (bool, int, float, str, type(None))
        _record(
            {
                "call": "generate",
                "batch_size": batch,
                "input_length": length,
                "kwargs": {
                    key: value if isinstance(value, simple) else type(value).__name__
                    for key, value in sorted(kwargs.items())
                },
            }
        )
        with torch.no_grad():
            return self.model.generate(
                input_ids,
                attention_mask=attention_mask,
                generation_config=generation_config,
                **kwargs,
            )


class NeuronModelForSeq2SeqLM:
    """Export: the eager checkpoint is "traced" by saving it next to an ``encoder/`` and a
    ``decoder/`` whose config.json carry the neuron shapes. Load: ``from_pretrained(directory)``
    brings the eager model back; ``generate`` refuses inputs above the static shapes and pads
    smaller ones to them (on the right), as the real one does, forwards only the arguments
    the real one forwards (``max_new_tokens``, ``max_length``, ``do_sample``; others in
    ``kwargs`` are dropped), records the call and runs the eager Hugging Face ``generate``."""

    def __init__(self, model_id: str, shapes: dict, model=None) -> None:
        self.model_id = model_id
        self.shapes = shapes
        self.model = model
        self.generation_config = None if model is None else model.generation_config

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        *,
        export: bool = False,
        batch_size: int | None = None,
        sequence_length: int | None = None,
        num_beams: int | None = None,
        auto_cast: str | None = "matmul",
        auto_cast_type: str | None = "bf16",
        tensor_parallel_size: int | None = 1,
        dynamic_batch_size: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> NeuronModelForSeq2SeqLM:
        import transformers

        if not export:
            encoder = json.loads((Path(model_id) / "encoder" / "config.json").read_text())
            _record({"call": "from_pretrained", "class": cls.__name__, "model_id": model_id})
            model = transformers.AutoModelForSeq2SeqLM.from_pretrained(model_id).eval()
            return cls(model_id, encoder["neuron"], model)
        if None in (batch_size, sequence_length, num_beams):
            # The real export names the missing mandatory axis the same way.
            raise AttributeError("batch_size, sequence_length and num_beams are mandatory")
        shapes = {
            "export": export,
            "batch_size": batch_size,
            "sequence_length": sequence_length,
            "num_beams": num_beams,
            "auto_cast": auto_cast,
            "auto_cast_type": None if auto_cast is None else auto_cast_type,
            "tensor_parallel_size": tensor_parallel_size,
            "dynamic_batch_size": dynamic_batch_size,
        }
        _record({"call": "from_pretrained", "class": cls.__name__, "model_id": model_id, **shapes})
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(model_id).eval()
        return cls(model_id, shapes, model)

    def save_pretrained(self, save_directory: str) -> None:
        _record({"call": "save_pretrained", "save_directory": save_directory})
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(save_directory)
        for part in ("encoder", "decoder"):
            target = Path(save_directory) / part
            target.mkdir(parents=True, exist_ok=True)
            (target / "config.json").write_text(json.dumps({"neuron": self.shapes}))

    def generate(
        self,
        input_ids,
        attention_mask=None,
        generation_config=None,
        logits_processor=None,
        stopping_criteria=None,
        prefix_allowed_tokens_fn=None,
        assistant_model=None,
        num_return_sequences: int = 1,
        **kwargs,
    ):
        import torch

        static = [self.shapes["batch_size"], self.shapes["sequence_length"]]
        inputs = {"input_ids": input_ids}
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        for name, tensor in inputs.items():
            for dim in (1, 0):
                if static[dim] - tensor.shape[dim] < 0:
                    raise ValueError(
                        f"Unable to pad {name} with shape: {tensor.shape} on dimension {dim} as "
                        f"input shapes must be inferior than the static shapes used for "
                        f"compilation: {static}."
                    )
        max_new_tokens = kwargs.pop("max_new_tokens", None)
        if max_new_tokens is not None and max_new_tokens + 1 > static[1]:
            raise ValueError(
                f"max_new_tokens ({max_new_tokens}) and the decoder start token do not fit "
                f"the static sequence length ({static[1]}) of the decoder cache"
            )
        simple = (bool, int, float, str, type(None))
        _record(
            {
                "call": "generate",
                "batch_size": input_ids.shape[0],
                "input_length": input_ids.shape[1],
                "max_new_tokens": max_new_tokens,
                "stopping_criteria": type(stopping_criteria).__name__,
                "generation_config": type(generation_config).__name__,
                "kwargs": {
                    key: value if isinstance(value, simple) else type(value).__name__
                    for key, value in sorted(kwargs.items())
                },
            }
        )
        pad = (generation_config or self.generation_config).pad_token_id or 0
        padded = {
            name: torch.nn.functional.pad(
                tensor,
                (0, static[1] - tensor.shape[1], 0, static[0] - tensor.shape[0]),
                value=pad if name == "input_ids" else 0,
            )
            for name, tensor in inputs.items()
        }
        with torch.no_grad():
            return self.model.generate(
                **padded,
                generation_config=generation_config,
                stopping_criteria=stopping_criteria,
                max_length=kwargs.pop("max_length", None) or static[1],
                max_new_tokens=max_new_tokens,
                do_sample=kwargs.pop("do_sample", False),
                num_beams=self.shapes["num_beams"],
            )
