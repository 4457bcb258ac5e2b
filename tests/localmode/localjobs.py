"""Shared settings of the local-mode tests: tiny jobs, small containers."""

HYPERPARAMETERS = {
    "max_steps": 4,
    "per_device_train_batch_size": 8,
    "logging_steps": 2,
    "save_steps": 2,
    "sequence_lengths": "16,32",
    "batch_size": 2,
    "labels": "ham,spam",
}
SMALL_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
SERVE_ENV = {**SMALL_ENV, "SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SMNEURON_LOG_FORMAT": "text"}
