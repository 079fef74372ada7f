#!/bin/sh
# The GPU check, under 5 minutes on one GPU (CI never needs a GPU; run this on a machine that has one):
#   1. the GPU-marked tests: CUDA traces == CPU traces (tiny families and SmolLM2), pinned staging
#   2. bench/trace_overhead.py on cuda with SmolLM2 (plain generate vs full tracing, side by side)
#   3. the same on a ~1B Llama-shaped model of random bfloat16 weights (bytes per second at a realistic size)
# Put the figures it prints in the README's performance section, with the GPU's name.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
echo "== GPU tests"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/tracer/test_gpu.py
echo "== SmolLM2-135M on cuda"
"$PY" bench/trace_overhead.py --device cuda --repeats 2
echo "== random Llama-shaped 1B, bfloat16, on cuda"
"$PY" bench/trace_overhead.py --device cuda --random-llama 1b --dtype bfloat16 --prompt-tokens 128 --new-tokens 64 --repeats 1
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l || echo 0)
if [ "$GPUS" -ge 2 ]; then  # several GPUs: tensor-parallel tracing under torchrun (nccl), one rank per GPU
  echo "== tensor parallel, 2 of $GPUS GPUs"
  TP_MODEL=$(mktemp -d)
  "$PY" -c "import sys; from tests.support.tiny_models import tiny_model, byte_tokenizer; m = tiny_model('llama', hidden_size=512, intermediate_size=1536, num_attention_heads=8, num_key_value_heads=4, num_hidden_layers=4); m.save_pretrained(sys.argv[1]); byte_tokenizer().save_pretrained(sys.argv[1])" "$TP_MODEL"
  "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 bench/tensor_parallel.py "$TP_MODEL" 16
  rm -rf "$TP_MODEL"
fi
