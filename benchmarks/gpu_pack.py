"""Write `.gpu/`, what a GPU run carries to the device machine (only the checkout travels there, 64 MiB in all).

    python benchmarks/gpu_pack.py [--data ../shared/data/csn6] [--max-records 6000]
    echo /.gpu/ >> .git/info/exclude        # once: carried by name, never committed

  .gpu/data/<language>/{train,valid,test,unimodal}.jsonl.gz
        the corpus slimmed to what the GPU units read (code_tokens, docstring_tokens, url), the first
        --max-records records of each file (valid and test whole), gzip level 9
  .gpu/minilm/   the packaged all-MiniLM-L6-v2 with its weights in fp16 (`model.fp16.safetensors`, half
        the file); gpu_run.py writes the fp32 `model.safetensors` back from it on the device (fp16 holds
        every MiniLM weight to 3 significant digits: the run starts from MiniLM, not bit for bit)

Then, with the device tool: `run` with carry [".gpu"] and the command `bash benchmarks/gpu_run.sh`.
Prints the sizes and whether the checkout plus `.gpu` fits the 64 MiB a call carries.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
from pathlib import Path

from safetensors.torch import load_file, save_file

from codebert.backbone import resolve
from codebert.corpus.jsonl import ALL_FILES, ReadReport, corpus_files, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
KEEP = ("code_tokens", "docstring_tokens", "url")  # what pretrain, generators, code2nl, search and probe read
LIMIT = 64 * 2**20  # what one device call carries: the checkout and the carried folders together


def slim_corpus(data: Path, out: Path, languages: list[str] | None, max_records: int) -> None:
    for lang, files in corpus_files(data, languages).items():
        (out / lang).mkdir(parents=True, exist_ok=True)
        for split in ALL_FILES:
            if split not in files:
                continue
            # valid and test whole: the evaluations rank groups of 1,000 and sample their own items
            limit = max_records if split in ("train", "unimodal") else 0
            with gzip.open(out / lang / f"{split}.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as f:
                for n, record in enumerate(read_jsonl(files[split], ReadReport())):
                    if limit and n >= limit:
                        break
                    f.write(json.dumps({k: record.get(k, "") for k in KEEP}, ensure_ascii=False) + "\n")


def half_minilm(out: Path) -> None:
    source = Path(resolve("minilm"))
    out.mkdir(parents=True, exist_ok=True)
    for path in source.rglob("*"):
        if path.is_file() and path.name != "model.safetensors" and path.suffix != ".md":
            target = out / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    weights = {k: v.half().contiguous() for k, v in load_file(str(source / "model.safetensors")).items()}
    save_file(weights, str(out / "model.fp16.safetensors"), metadata={"format": "pt"})


def size_of(paths: list[Path]) -> int:
    return sum(p.stat().st_size for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/csn6")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    parser.add_argument("--languages", nargs="*", default=None, help="languages to carry (default: all)")
    parser.add_argument("--max-records", type=int, default=6000, help="train and unimodal records per language")
    opts = parser.parse_args()
    if opts.out.exists():
        shutil.rmtree(opts.out)
    slim_corpus(opts.data, opts.out / "data", opts.languages, opts.max_records)
    half_minilm(opts.out / "minilm")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout.split("\0")
    checkout = size_of([ROOT / p for p in tracked if p and (ROOT / p).is_file()])
    data, model = size_of([opts.out / "data"]), size_of([opts.out / "minilm"])
    total = checkout + data + model
    print(f"corpus {data / 2**20:.1f} MiB, MiniLM {model / 2**20:.1f} MiB, checkout {checkout / 2**20:.1f} MiB: "
          f"{total / 2**20:.1f} MiB of the {LIMIT / 2**20:.0f} MiB a call carries ({'fits' if total <= LIMIT else 'TOO LARGE: lower --max-records'})")


if __name__ == "__main__":
    main()
