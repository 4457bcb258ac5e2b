"""The training toolkit's view of a job for a user script: ``SM_*`` variables and arguments.

Names and formats follow the SageMaker training toolkit (its ENVIRONMENT_VARIABLES.md): a
string value as it is, anything else compact JSON with sorted keys; hyperparameters as
``--name value`` arguments, sorted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smneuron.env import ENV
from smneuron.job import TrainingEnv, read_json

if TYPE_CHECKING:
    from smneuron.training.script import ScriptJob


def to_cmd_args(hyperparameters: Mapping[str, Any]) -> list[str]:
    """``--name value`` per hyperparameter, sorted by name (``-x`` for one-letter names).

    Values as the toolkit writes them: ``str()`` of the decoded JSON value (``True``,
    ``[1, 2]``), a dict as ``k=v,k2=v2``, None as an empty string.
    """
    args: list[str] = []
    for name in sorted(hyperparameters):
        value = hyperparameters[name]
        args.append(f"--{name}" if len(str(name)) > 1 else f"-{name}")
        if isinstance(value, Mapping):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append("" if value is None else str(value))
    return args


def env_value(value: Any) -> str:
    """A string as it is, None as empty, anything else compact JSON with sorted keys."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def num_cpus() -> int:
    """CPUs this process may use (the container's limit, not the host's count)."""
    from smneuron.cpus import available_cpus

    return available_cpus()


def training_env(
    job: ScriptJob,
    env: TrainingEnv,
    code_dir: Path,
    *,
    num_neurons: int,
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """The toolkit's ``SM_TRAINING_ENV`` dictionary for this job."""
    paths = env.paths
    resource = read_json(paths.resource_config, "resourceconfig.json", default={}) or {
        "current_host": env.resource.current_host,
        "hosts": list(env.resource.hosts),
        "network_interface_name": env.resource.network_interface_name,
    }
    hosts = list(env.resource.hosts)
    group = resource.get("current_group_name", "homogeneousCluster")
    groups = {g["instance_group_name"]: g for g in resource.get("instance_groups", [])}
    distribution_groups = job.framework_params.get(
        "sagemaker_distribution_instance_groups", [group] if job.distribution_requested else []
    )
    distribution_hosts = (
        [h for name in distribution_groups for h in groups.get(name, {}).get("hosts", [])]
        if groups
        else list(hosts)
    )
    master = distribution_hosts[0] if distribution_hosts else hosts[0]
    return {
        "additional_framework_parameters": dict(job.framework_params),
        "channel_input_dirs": {name: str(path) for name, path in env.channels.items()},
        "current_host": env.resource.current_host,
        "current_instance_group": group,
        "current_instance_group_hosts": groups.get(group, {}).get("hosts", []),
        "current_instance_type": resource.get("current_instance_type", "local"),
        "distribution_hosts": distribution_hosts,
        "distribution_instance_groups": distribution_groups,
        "framework_module": environ.get(ENV.SAGEMAKER_TRAINING_MODULE),
        "hosts": hosts,
        "hyperparameters": dict(job.hyperparameters),
        "input_config_dir": str(paths.input_config),
        "input_data_config": dict(env.input_data_config),
        "input_dir": str(paths.base / "input"),
        "instance_groups": list(groups),
        "instance_groups_dict": groups,
        "is_hetero": len(groups) > 1,
        "is_master": env.resource.current_host == master,
        "is_modelparallel_enabled": False,
        "is_smddpmprun_installed": False,
        "is_smddprun_installed": False,
        "job_name": job.job_name,
        "log_level": job.log_level,
        "master_hostname": master,
        "model_dir": str(paths.model),
        "module_dir": job.source or str(code_dir),
        "module_name": job.module_name,
        "network_interface_name": env.resource.network_interface_name,
        "num_cpus": num_cpus(),
        "num_gpus": 0,
        "num_neurons": num_neurons,
        "output_data_dir": str(paths.output_data),
        "output_dir": str(paths.output),
        "output_intermediate_dir": str(paths.output / "intermediate"),
        "resource_config": resource,
        "user_entry_point": job.program,
    }


# Keys of SM_TRAINING_ENV that also become SM_<KEY> variables (the toolkit's to_env_vars).
EXPORTED = (
    "hosts",
    "network_interface_name",
    "user_entry_point",
    "resource_config",
    "input_data_config",
    "output_data_dir",
    "current_host",
    "current_instance_type",
    "current_instance_group",
    "current_instance_group_hosts",
    "instance_groups",
    "instance_groups_dict",
    "distribution_instance_groups",
    "is_hetero",
    "module_name",
    "log_level",
    "framework_module",
    "input_dir",
    "input_config_dir",
    "output_dir",
    "num_cpus",
    "num_gpus",
    "num_neurons",
    "model_dir",
    "module_dir",
    "output_intermediate_dir",
)


def sm_environment(training: Mapping[str, Any]) -> dict[str, str]:
    """``SM_*`` variables from the ``SM_TRAINING_ENV`` dictionary, in the toolkit's formats."""
    values: dict[str, Any] = {key: training[key] for key in EXPORTED}
    values["hps"] = training["hyperparameters"]
    values["framework_params"] = training["additional_framework_parameters"]
    values["channels"] = sorted(training["channel_input_dirs"])
    values["training_env"] = dict(training)
    values["user_args"] = to_cmd_args(training["hyperparameters"])
    for name, path in training["channel_input_dirs"].items():
        values[f"channel_{name}"] = path
    for name, value in training["hyperparameters"].items():
        values[f"hp_{name}"] = value
    return {f"SM_{str(key).upper()}": env_value(value) for key, value in values.items()}
