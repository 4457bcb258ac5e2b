"""FAKE neuronxcc package (stand-in for the Neuron compiler's Python package)."""

__version__ = "2.21.18209.0"
FAKE = True
