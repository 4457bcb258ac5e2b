"""smneuron: bring-your-own SageMaker containers for AWS Neuron."""

__version__ = "0.1.0"
