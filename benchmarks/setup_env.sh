#!/usr/bin/env bash
# The benchmark environment: segany's dependencies plus the official implementations, in
# .venv-bench (never in segany's own environment). CPU torch pinned; torchvision (needed by
# the official packages' imports, no CPU build for torch 2.13) without its dependencies, its
# NMS operator supplied by $SEGANY_SHARED/reference/tv_shim.py at run time. The official SAM 2
# (sam2 1.1.0) from its source distribution without the CUDA extension (its hole filling is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-bench
.venv-bench/bin/pip install -q torch==2.13.0 -e . segment-anything==1.0 mobilesam-mirror pyyaml huggingface_hub safetensors
.venv-bench/bin/pip install -q --no-deps timm torchvision==0.28.0
.venv-bench/bin/pip install -q hydra-core iopath setuptools wheel
SAM2_BUILD_CUDA=0 .venv-bench/bin/pip install -q --no-deps --no-build-isolation sam2==1.1.0
