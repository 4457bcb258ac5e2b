"""The training container's Python side: `train` honours the SageMaker training contract."""
