#!/bin/sh
# The GPU check, under 5 minutes on one GPU (CI never needs a GPU; run this on a machine that has one):
#   1. the GPU-marked tests: CUDA traces == CPU traces (tiny families and SmolLM2), pinned staging
#   2. bench/trace_overhead.py on cuda with SmolLM2 (plain generate vs full tracing, side by side)
#   3. the same on a ~1B Llama-shaped model of random bfloat16 weights (bytes per second at a realistic size)
#   4. with several GPUs: the tensor-parallel bench over 2, then `trace --tensor-parallel` over all of them
#      (a Llama, and a mixture of experts with expert parallelism) compared with a trace on one GPU
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
  echo "== trace --tensor-parallel over all $GPUS GPUs against one GPU: a Llama, and a mixture of experts (expert parallelism)"
  TP_DIR=$(mktemp -d)
  "$PY" - "$TP_DIR" "$GPUS" <<'EOF_MODELS'
import sys
from tests.support.tiny_models import byte_tokenizer, tiny_model
root, n = sys.argv[1], int(sys.argv[2])  # heads, KV heads, neurons and experts divide by the GPU count
shape = dict(hidden_size=64 * n, intermediate_size=128 * n, num_attention_heads=2 * n, num_key_value_heads=n, head_dim=32)
for family, extra in (("llama", {}), ("mixtral", {"num_local_experts": 2 * n})):
    tiny_model(family, **shape, **extra).save_pretrained(f"{root}/{family}")
    byte_tokenizer().save_pretrained(f"{root}/{family}")
EOF_MODELS
  for FAMILY in llama mixtral; do
    set -- trace --model "$TP_DIR/$FAMILY" --prompt "The capital of France is" --no-chat --max-new-tokens 4
    "$PY" -m torch.distributed.run --standalone --nproc-per-node "$GPUS" -m stepscope "$@" --out "$TP_DIR/$FAMILY-tp" --tensor-parallel
    "$PY" -m stepscope "$@" --out "$TP_DIR/$FAMILY-one"
    "$PY" -c "import sys; from stepscope.tracer import load_trace; from tests.tracer.test_tensor_parallel import assert_same_trace; assert_same_trace(load_trace(sys.argv[1]), load_trace(sys.argv[2])); print(sys.argv[3], 'over', sys.argv[4], 'GPUs: the same trace as on one GPU')" "$TP_DIR/$FAMILY-tp" "$TP_DIR/$FAMILY-one" "$FAMILY" "$GPUS"
  done
  rm -rf "$TP_DIR"
fi
