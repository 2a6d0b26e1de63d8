"""The GPU checks of the fidelity issue in one command: at most 9 minutes on one H100 (`gpu_run.sh` runs it).

What it runs, in order, each figure and small result file written under --out:
  env          torch, transformers and the device (env.json)
  cuda tests   `pytest -m cuda`: the GPU paths against the CPU (cuda_tests.log)
  throughput   pre-training steps of the `base` shape (RoBERTa-base, the paper's) in bf16, ours against the
               Hugging Face Trainer: tokens/s and MFU against the GPU's measured bf16 peak (throughput.json)
  heavy units  at once, sharing the GPU, each ended by its step budget or the deadline, whichever first:
                 mlm       MLM continued from the init (the `minilm` preset's pretrain section), up to 10,000 steps
                 gens      the NL and code n-gram generators on the init's tokenizer, then
                 mlm+rtd   MLM+RTD continued from the init, the paper's loss, up to 10,000 steps
                 code2nl   the reference's decoder (6 layers, FFN 2048) on python for one epoch, then beam-10
                           test BLEU with the source-shuffle diagnostic
                 cross     the paper's cross-encoder on ruby for one epoch, then MRR on a test group of 1,000
               then probing (Table 4 items of --data) of both continued checkpoints
  summary      figures.json (every unit's figures) and summary.md; logs.tar.gz (logs and metrics.jsonl)

`--dry-run` runs the same plan at tiny sizes on the CPU (the fixture corpus, a few steps each): the
tests run it, so the command is known to work before a GPU is lent.

On the device machine nothing can be installed from a registry and only the checkout travels (64 MiB):
`benchmarks/gpu_pack.py` writes the folder to carry (a slim corpus and the init's weights in fp16);
`gpu_run.sh` sets the paths up and calls this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Plan:
    """Sizes of one run of the plan; `gpu()` is the real one, `dry()` the CPU rehearsal."""

    data: Path  # corpus folder (CodeSearchNet layout)
    init: str  # the encoder continued and fine-tuned (a folder, or `minilm`)
    minutes: float  # the whole command's budget
    device: str  # cuda or cpu
    pretrain_steps: int = 10_000  # the issue: 10,000+ continued steps per objective
    pretrain: list[str] = field(default_factory=list)  # extra flags for both pre-training units
    code2nl: list[str] = field(default_factory=list)  # flags of the code-to-doc unit
    code2nl_language: str = "python"
    code2nl_test_records: int = 200
    cross: list[str] = field(default_factory=list)  # flags of the cross-encoder unit
    cross_language: str = "ruby"
    cross_queries: int = 100  # test queries ranked against their group's 1,000 candidates
    group_size: int = 1000
    throughput: list[str] = field(default_factory=list)  # flags of benchmarks/pretrain_throughput.py
    threads: int = 4  # CPU threads per unit (the device has 16 cores)

    @staticmethod
    def gpu(data: Path, init: str) -> Plan:
        return Plan(
            data=data, init=init, minutes=9.0, device="cuda",
            pretrain=["--eval-every", "2500", "--save-every", "0", "--log-every", "100"],
            code2nl=["--epochs", "1", "--batch-size", "64", "--decoder-layers", "6", "--learning-rate", "5e-5",
                     "--eval-every", "200", "--save-every", "0", "--valid-examples", "1000", "--best-metric", "loss"],
            cross=["--epochs", "1", "--batch-size", "64", "--learning-rate", "2e-5", "--eval-every", "500", "--save-every", "0"],
            throughput=["--device", "cuda", "--shape", "base", "--steps", "30", "--skip-hf-fp32"],
        )

    @staticmethod
    def dry(data: Path, init: str) -> Plan:
        return Plan(
            data=data, init=init, minutes=8.0, device="cpu", pretrain_steps=2, threads=1,
            pretrain=["--batch-size", "4", "--max-length", "64", "--valid-examples", "8", "--frozen-steps", "0"],
            code2nl=["--max-steps", "2", "--batch-size", "4", "--decoder-layers", "1", "--max-source-length", "64",
                     "--max-target-length", "16", "--valid-examples", "4", "--beam-size", "2"],
            code2nl_test_records=4, cross_language="python",
            cross=["--max-steps", "2", "--batch-size", "4", "--max-length", "64", "--valid-examples", "8"],
            cross_queries=3, group_size=20,
            throughput=["--device", "cpu", "--shape", "tiny", "--steps", "2", "--records", "20", "--skip-hf-bf16", "--skip-hf-fp32"],
        )


class Runner:
    """Starts units as `codebert` processes, logs each to its own file, reads their figures."""

    def __init__(self, work: Path, plan: Plan, deadline: float):
        self.work, self.plan, self.deadline = work, plan, deadline
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.figures: dict[str, dict] = {}
        self.failed: list[str] = []

    def minutes_left(self, reserve: float) -> float:
        """Minutes a unit may train for, keeping `reserve` minutes for what follows it."""
        return max(0.2, (self.deadline - time.monotonic()) / 60 - reserve)

    def start(self, name: str, args: list[str]) -> tuple[str, subprocess.Popen]:
        log = (self.work / f"{name}.log").open("w")
        command = [sys.executable, "-m", "codebert", *args, "--json"]
        log.write(" ".join(command) + "\n")
        log.flush()
        return name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)

    def wait(self, started: tuple[str, subprocess.Popen]) -> dict:
        name, process = started
        code = process.wait()
        lines = (self.work / f"{name}.log").read_text(errors="replace").splitlines()
        figures = {}
        for line in reversed(lines):  # `--json`: the figures are the last line that parses as an object
            if line.startswith("{"):
                try:
                    figures = json.loads(line)
                    break
                except json.JSONDecodeError:
                    continue
        if code != 0:
            self.failed.append(f"{name} (exit {code}): {lines[-1] if lines else ''}")
        self.figures[name] = {"exit": code, **figures}
        print(f"  {name}: exit {code}, {time.strftime('%H:%M:%S')}", flush=True)
        return figures

    def run(self, name: str, args: list[str]) -> dict:
        return self.wait(self.start(name, args))


def environment(out: Path) -> dict:
    # Imported here: the orchestrator itself runs units as processes; only this report needs torch.
    import torch
    import transformers

    figures = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
               "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        figures.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)))
    (out / "env.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")), help="where the figures go (default $OUT)")
    parser.add_argument("--data", type=Path, default=None, help="corpus (default: .gpu/data from gpu_pack.py; --dry-run: the fixture corpus)")
    parser.add_argument("--init", default=None, help="encoder to continue (default: .gpu/minilm, else the packaged minilm)")
    parser.add_argument("--work", type=Path, default=None, help="run folders (default: a folder beside --out)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: check the command, not the model")
    opts = parser.parse_args()
    started = time.monotonic()
    packed = ROOT / ".gpu"
    if opts.dry_run:
        plan = Plan.dry(opts.data or ROOT / "tests/fixtures/corpus", opts.init or "minilm")
    else:
        init = opts.init or (unpack_init(packed / "minilm") if (packed / "minilm").is_dir() else "minilm")
        plan = Plan.gpu(opts.data or packed / "data", init)
    if not plan.data.is_dir():
        print(f"gpu_run: --data {plan.data}: no such folder (write one with benchmarks/gpu_pack.py)", file=sys.stderr)
        return 2
    opts.out.mkdir(parents=True, exist_ok=True)
    work = opts.work or opts.out.parent / f"{opts.out.name}-work"
    work.mkdir(parents=True, exist_ok=True)
    env = environment(opts.out)
    print(f"gpu_run: {env}", flush=True)
    if plan.device == "cuda" and not env["cuda"]:
        print("gpu_run: no CUDA device here (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    runner = Runner(work, plan, started + plan.minutes * 60)
    threads = ["--threads", str(plan.threads)]

    print("[1/4] CUDA tests", flush=True)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests", "-p", "no:cacheprovider"],
                           cwd=ROOT, capture_output=True, text=True, env=runner.env)
    (opts.out / "cuda_tests.log").write_text(tests.stdout[-20000:] + tests.stderr[-5000:])
    runner.figures["cuda_tests"] = {"exit": tests.returncode, "summary": (tests.stdout.strip().splitlines() or [""])[-1]}

    print("[2/4] pre-training throughput against the HF Trainer", flush=True)
    throughput = subprocess.run([sys.executable, str(ROOT / "benchmarks/pretrain_throughput.py"), "--tokenizer", plan.init,
                                 "--data", str(plan.data), "--json", str(opts.out / "throughput.json"), *plan.throughput],
                                cwd=ROOT, capture_output=True, text=True, env=runner.env)
    (work / "throughput.log").write_text(throughput.stdout + throughput.stderr)
    runner.figures["throughput"] = {"exit": throughput.returncode, "table": throughput.stdout.strip().splitlines()[-8:]}

    print("[3/4] heavy units, sharing the device", flush=True)
    data, init = str(plan.data), plan.init
    # Every unit but the cross-encoder's reads the preset of the paper's INIT rows on our machines.
    common = ["--config", "minilm", "--data", data, *threads, "--no-progress"]
    pretrain = [*common, "--init", init, "--max-steps", str(plan.pretrain_steps), *plan.pretrain]
    probe_items = runner.start("probe-build", ["probe", "build", "--data", data, "--out", str(work / "probe-items.json")])
    gens = runner.start("gens", ["generators", "fit", "--data", data, "--tokenizer", init, "--out", str(work / "gens")])
    mlm = runner.start("mlm", ["pretrain", *pretrain, "--objective", "mlm", "--out", str(work / "mlm"),
                               "--max-minutes", f"{runner.minutes_left(1.0):.2f}"])
    code2nl = runner.start("code2nl", ["code2nl", "finetune", *common, "--model", init, "--language", plan.code2nl_language,
                                       "--out", str(work / "code2nl"), *plan.code2nl,
                                       "--max-minutes", f"{runner.minutes_left(2.0):.2f}"])
    cross = runner.start("cross", ["search", "finetune", "--data", data, *threads, "--no-progress", "--mode", "cross",
                                   "--model", init, "--language", plan.cross_language, "--out", str(work / "cross"),
                                   *plan.cross, "--max-minutes", f"{runner.minutes_left(1.5):.2f}"])
    runner.wait(probe_items)
    runner.wait(gens)
    mlm_rtd = runner.start("mlm+rtd", ["pretrain", *pretrain, "--objective", "mlm+rtd", "--generators", str(work / "gens"),
                                       "--out", str(work / "mlm-rtd"), "--max-minutes", f"{runner.minutes_left(1.0):.2f}"])
    runner.wait(cross)
    runner.run("cross-test", ["search", "evaluate", "--model", best_or_final(work / "cross"), "--data", data, *threads,
                              "--language", plan.cross_language, "--group-size", str(plan.group_size), "--max-groups", "1",
                              "--queries-per-group", str(plan.cross_queries), "--no-progress"])
    runner.wait(code2nl)
    runner.run("code2nl-test", ["code2nl", "evaluate", "--model", best_or_final(work / "code2nl"), "--data", data, *threads,
                                "--language", plan.code2nl_language, "--max-records", str(plan.code2nl_test_records),
                                "--out", str(work / "code2nl-test"), "--no-progress"])
    runner.wait(mlm)
    runner.wait(mlm_rtd)

    print("[4/4] probing the continued checkpoints", flush=True)
    for name, folder in (("mlm", "mlm"), ("mlm+rtd", "mlm-rtd")):
        if (work / folder / "final").is_dir() and (work / "probe-items.json").is_file():
            runner.run(f"probe-{name}", ["probe", "run", "--model", str(work / folder / "final"), "--data",
                                         str(work / "probe-items.json"), *threads, "--no-progress"])

    summary = {"plan": {"dry_run": opts.dry_run, "data": data, "init": init, "minutes": round((time.monotonic() - started) / 60, 2)},
               "env": env, "units": runner.figures, "failed": runner.failed}
    (opts.out / "figures.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (opts.out / "summary.md").write_text(render(summary))
    with tarfile.open(opts.out / "logs.tar.gz", "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.suffix in (".log", ".jsonl") or path.name in ("results.json", "predictions.txt"):
                tar.add(path, arcname=str(path.relative_to(work)))
    print(render(summary), flush=True)
    return 1 if runner.failed or tests.returncode not in (0, 5) or throughput.returncode else 0


def unpack_init(folder: Path) -> str:
    """gpu_pack.py carries the weights in fp16 (half the bytes of the 64 MiB a call carries): the fp32 file
    every stage loads is written back from them once, on the device."""
    weights = folder / "model.safetensors"
    if not weights.is_file() and (folder / "model.fp16.safetensors").is_file():
        # Imported here: torch only on the device run that unpacks (a dry run never does).
        from safetensors.torch import load_file, save_file

        half = load_file(str(folder / "model.fp16.safetensors"))
        save_file({k: v.float().contiguous() for k, v in half.items()}, str(weights), metadata={"format": "pt"})
    return str(folder)


def best_or_final(run: Path) -> str:
    """The run's best/ model where validation kept one, else final/ (a run cut short by the deadline)."""
    return str(run / "best") if (run / "best").is_dir() else str(run / "final")


def render(summary: dict) -> str:
    units = summary["units"]
    lines = [f"# GPU run ({summary['env'].get('device', 'CPU')}, {summary['plan']['minutes']} min)", ""]
    keys = {  # a key ending in a "*" stands for every figure that ends so (per-language names)
        "cuda_tests": ("summary",),
        "mlm": ("step", "valid_mlm_acc", "valid_mlm_loss"),
        "mlm+rtd": ("step", "valid_mlm_acc", "valid_rtd_acc", "valid_rtd_floor", "valid_rtd_auc", "valid_rtd_loss", "valid_rtd_base_loss"),
        "code2nl": ("step", "best_valid_loss", "valid_shuffle_gain"),
        "code2nl-test": ("macro_bleu", "distinct_predictions", "predictions", "*_loss", "*_shuffle_gain"),
        "cross": ("step", "best_valid_acc"),
        "cross-test": ("macro_mrr", "*_queries"),
        "probe-mlm": ("accuracy",),
        "probe-mlm+rtd": ("accuracy",),
    }
    lines += ["| unit | exit | figures |", "|---|---:|---|"]
    for name, figures in units.items():
        wanted = keys.get(name, ())
        shown = {k: v for k, v in figures.items()
                 if k in wanted or any(w.startswith("*") and k.endswith(w[1:]) for w in wanted)}
        lines.append(f"| {name} | {figures.get('exit', '')} | {json.dumps(shown, default=str)[:400]} |")
    if "table" in units.get("throughput", {}):
        lines += ["", "Throughput:", "", "```", *units["throughput"]["table"], "```"]
    if summary["failed"]:
        lines += ["", "Failed: " + "; ".join(summary["failed"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
