"""FAKE torch_neuronx: the real API names and signatures, recording calls, compiling nothing.

The real package (AWS Neuron SDK) is not on PyPI and needs a Neuron device to run graphs.
This stand-in lets the tests and the stand-in base image exercise the Neuron code paths:

- ``trace`` records (shapes, dtypes, compiler args, ``cpu_backend``, the ``NEURON_*`` /
  ``XLA_*`` environment it saw) and returns ``torch.jit.trace`` of the function, so the result
  saves, loads and runs on CPU; like the real one, ``cpu_backend=True`` without ``--target``
  in the compiler args is an error;
- ``async_load``, ``lazy_load`` and ``DataParallel`` record their calls.

Every call is appended to ``CALLS``; when ``FAKE_TORCH_NEURONX_LOG`` names a file, it is
also written there as one JSON line, so tests can read calls made in another process.
"""

from __future__ import annotations

import json
import os
import warnings

__version__ = "2.9.0.2.13.26312+8e870898"
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
    import shlex

    import torch

    args = shlex.split(compiler_args) if isinstance(compiler_args, str) else compiler_args
    if cpu_backend and not any(a == "--target" or a.startswith("--target=") for a in args or ()):
        # The API reference: cpu_backend "needs to be used with the compiler_args option to
        # set the --target flag".
        raise ValueError("cpu_backend=True needs --target in compiler_args")
    shapes, dtypes = _describe(example_inputs)
    _record(
        "trace",
        shapes=shapes,
        dtypes=dtypes,
        compiler_args=list(args) if args is not None else None,
        compiler_workdir=compiler_workdir,
        inline_weights_to_neff=inline_weights_to_neff,
        cpu_backend=cpu_backend,
        # What the compiler would also read from the process environment.
        env={k: v for k, v in os.environ.items() if k.startswith(("NEURON_", "XLA_"))},
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
