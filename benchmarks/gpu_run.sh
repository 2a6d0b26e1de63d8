#!/usr/bin/env bash
# The fidelity issue's GPU run in one command, at most 9 minutes on one H100 (benchmarks/gpu_run.py says what
# it runs). Figures and small result files go to $OUT (the device tool brings them back).
#
#   here, once before a device run:  python benchmarks/gpu_pack.py      (writes .gpu/: slim corpus, MiniLM in fp16)
#   with the device tool:            run(command="bash benchmarks/gpu_run.sh", carry=[".gpu"], timeout_s=600)
#   here, to check the command:      bash benchmarks/gpu_run.sh --dry-run --out /tmp/gpu-dry   (tiny, CPU; the tests run it)
#
# The device's image has torch, transformers and the rest of what these units import; the package is not
# installed there (its torch pin is this machine's CPU build): src/ goes on the path instead. Wheels of
# anything else it lacks can travel in .gpu/wheels (the device tool's README says how to fetch them).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site .gpu/wheels/*.whl
  export PYTHONPATH=/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
exec "$PYTHON" benchmarks/gpu_run.py "$@"
