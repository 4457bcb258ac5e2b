"""FAKE neuronxcc package (stand-in for the Neuron compiler's Python package)."""

__version__ = "2.24.8799.0+6f62ff7c"
FAKE = True
