"""AWS-facing tools: ECR push, sagemaker-runtime invoke, SageMaker SDK local mode."""
