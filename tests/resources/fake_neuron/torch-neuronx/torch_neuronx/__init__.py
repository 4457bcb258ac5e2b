"""FAKE torch_neuronx: the real API names and signatures, recording calls, compiling nothing.

The real package (AWS Neuron SDK) is not on PyPI and needs a Neuron device to run graphs.
This stand-in lets the tests and the stand-in base image exercise the Neuron code paths:

- ``trace`` records (shapes, dtypes, compiler args, ...) and returns ``torch.jit.trace`` of
  the function, so the result saves, loads and runs on CPU;
- ``async_load``, ``lazy_load`` and ``DataParallel`` record their calls.

Every call is appended to ``CALLS``; when ``FAKE_TORCH_NEURONX_LOG`` names a file, it is
also written there as one JSON line, so tests can read calls made in another process.
"""

from __future__ import annotations

import json
import os
import warnings

__version__ = "2.8.0.2.10.13553"
FAKE = True
CALLS: list[dict] = []


def _record(name: str, **details) -> None:
    entry = {"call": name, **details}
    CALLS.append(entry)
    log_path = os.environ.get("FAKE_TORCH_NEURONX_LOG")
    if log_path:
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def _describe(example_inputs):
    tensors = example_inputs if isinstance(example_inputs, tuple | list) else (example_inputs,)
    return [list(t.shape) for t in tensors], [str(t.dtype) for t in tensors]


def trace(
    func,
    example_inputs,
    *_,
    input_output_aliases={},  # noqa: B006 - the real signature's default
    compiler_workdir=None,
    compiler_args=None,
    partitioner_config=None,
    inline_weights_to_neff=True,
    cpu_backend=False,
):
    """Same signature as torch_neuronx.trace (Neuron SDK 2.26); traces with torch.jit."""
    import torch

    shapes, dtypes = _describe(example_inputs)
    _record(
        "trace",
        shapes=shapes,
        dtypes=dtypes,
        compiler_args=list(compiler_args) if compiler_args is not None else None,
        compiler_workdir=compiler_workdir,
        inline_weights_to_neff=inline_weights_to_neff,
        module=type(func).__name__,
    )
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(func, inputs, strict=False)


def async_load(trace, enable_async_load=True):
    _record("async_load", enable_async_load=enable_async_load)


def lazy_load(trace, enable_lazy_load=True):
    _record("lazy_load", enable_lazy_load=enable_lazy_load)


class DataParallel:
    """Records construction; calls the module directly."""

    def __init__(self, module, device_ids=None, dim=0, set_dynamic_batching=True):
        _record("DataParallel", device_ids=device_ids, dim=dim)
        self.module = module

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)
