#!/usr/bin/env bash
# The GPU checks, as one script: CUDA tests, the demo study on the GPU, the engine and
# throughput benchmarks.
# Run from the repository root on a machine with a CUDA GPU and torch, timm and kornia
# importable (invkit itself from this checkout). Figures go to stdout and to $OUT when set.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/invkit-device-check}"
mkdir -p "$out"
nvidia-smi -L
python3 -c "import torch, kornia, timm; print('torch', torch.__version__, 'kornia', kornia.__version__, 'timm', timm.__version__)"
python3 -m pytest -q -p no:cacheprovider -rs \
  tests/test_transforms.py tests/test_measures.py \
  "tests/test_study.py::test_study_on_cuda_matches_cpu" 2>&1 | tail -5
echo "== demo study on the GPU"
start=$SECONDS
python3 -m invkit.cli study --demo --device cuda --no-progress --out /tmp/invkit-demo-gpu 2>&1 \
  | grep -E "cell\(s\) computed|× clean:" | tail -13
echo "demo wall $((SECONDS - start)) s (training the 12 models on the CPU included)"
echo "== engine throughput"
python3 benchmarks/engine.py --device cuda --model resnet50 --images 2048 --batch-size 128 \
  --workers 8 | tee "$out/engine_h200.txt"
echo "== throughput against the limit and the plain approach (resnet50, JPEG photos)"
python3 benchmarks/throughput.py --device cuda --models resnet50:224:512 --batch-size 128 \
  --repeats 3 --many-images 512 --memory-images 0 | tee "$out/throughput_h200.txt"
