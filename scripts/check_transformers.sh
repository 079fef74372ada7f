#!/bin/sh
# The recording tests against the oldest and the newest transformers that pyproject.toml claims.
#
#     scripts/check_transformers.sh            # OLDEST and NEWEST below
#     scripts/check_transformers.sh 5.12.1     # any other versions
#
# Each version is installed with its own dependencies into a separate target directory
# ($TMPDIR/stepscope-transformers-V) that shadows the venv's copies on PYTHONPATH: the venv itself is
# never changed. Needs network access to PyPI the first time (about 30 s per version), then ~1 min
# of tests per version. tests/cli/test_versions.py checks in CI that OLDEST is pyproject's lower bound.
#
# Scope: the recording, lens and family tests of the families with the common block shape. The
# families whose blocks vary it need newer releases (measured with
# tests/tracer/test_families_variant_blocks.py): gpt-oss and DeepSeek-V3 fail on 5.16.1 and pass on
# 5.20.2; Qwen3-Next fails on 5.23.0 and passes on 5.24.0. Their adapters say so (`min_transformers`):
# on an older release they refuse in one line instead of recording.
set -eu
OLDEST=5.6.0   # 5.5.x fails: Mixtral / Qwen3-MoE experts had another layout
NEWEST=5.24.0  # the newest release when the range was last checked
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
[ $# -gt 0 ] || set -- "$OLDEST" "$NEWEST"
status=0
for v in "$@"; do
    dir="${TMPDIR:-/tmp}/stepscope-transformers-$v"
    [ -d "$dir/transformers" ] || "$PY" -m pip install -q --target "$dir" "transformers==$v"
    echo "== transformers $v"
    PYTHONPATH="$dir:$PWD" OMP_NUM_THREADS=1 "$PY" -m pytest -q -p no:cacheprovider \
        tests/tracer/test_recording.py tests/reader/test_lens.py tests/tracer/test_families.py || status=1
done
exit $status
