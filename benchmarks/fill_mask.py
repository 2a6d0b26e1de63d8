"""A pre-trained checkpoint in plain `transformers` (no codebert import): fill `<mask>` in code.

    python benchmarks/fill_mask.py runs/small-mlm-rtd/final [--top-k 5]

Prints, for a few snippets in several languages, the top predictions of the
`fill-mask` pipeline, which loads the folder with AutoModelForMaskedLM.
"""

from __future__ import annotations

import argparse

from transformers import pipeline
from transformers.utils import logging as hf_logging

# The pre-training layout: doc, then </s></s>, then code (the pipeline adds <s> and the final </s>).
SNIPPETS = [
    "Return the name . </s></s> def get_name ( self ) : return self . <mask>",
    "Sum the items . </s></s> def total ( items ) : for i in <mask> ( len ( items ) ) : s += items [ i ]",
    "Returns the size . </s></s> public int size ( ) { return this . items . <mask> ( ) ; }",
    "Open the file . </s></s> func Open ( name string ) ( * File , error ) { if err != nil { return <mask> , err } }",
    "Adds two numbers . </s></s> function add ( a , b ) { <mask> a + b ; }",
    "Returns the number of <mask> in the list . </s></s> def count ( self ) : return len ( self . items )",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()
    hf_logging.set_verbosity_error()  # the RTD head is not part of AutoModelForMaskedLM: skipping it is expected
    hf_logging.disable_progress_bar()
    fill = pipeline("fill-mask", model=args.model, tokenizer=args.model)
    for text in SNIPPETS:
        predictions = fill(text, top_k=args.top_k)
        shown = ", ".join(f"{p['token_str'].strip()!r} {p['score']:.2f}" for p in predictions)
        print(f"{text}\n    -> {shown}")


if __name__ == "__main__":
    main()
