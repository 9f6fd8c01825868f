#!/usr/bin/env bash
# Prepare .wheels/ (ignored by git) for benchmarks/gpu.sh: the wheels of every package that the
# GPU benchmarks import and that a CUDA torch image lacks, for Linux x86-64 and its Python
# (3.12 by default), at the versions of this checkout's .venv. Run it here, where pip reaches
# the package registry; the GPU machine reaches nothing, so the folder travels with the call
# (the device tool's `carry`, 64 MiB for the whole working tree: the script fails above
# WHEELS_MAX_MIB).
#
#   bash benchmarks/gpu_wheels.sh            # then: the device tool runs benchmarks/gpu.sh
#
# Which packages: the four GPU benchmarks and every module of lab/ and probes/ are imported in
# .venv (no benchmark's main() runs), and every distribution that provides a module they loaded
# is listed, minus torch, nvidia-* and
# triton (the image's own CUDA builds; never pulled here) and minus the packages the image
# already holds (IMAGE below: the CUDA image's package list, as read on its machines,
# 2026-11-17), whose versions the image's torch was built and tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYVER=${WHEELS_PYTHON:-3.12}
DEST=${WHEELS_DIR:-.wheels}
MAX_MIB=${WHEELS_MAX_MIB:-40}

IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn
einops equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec
gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio
iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray
xxhash yarl zipp"

# name==version of each distribution the benchmarks load that the image lacks
WANTED=$(IMAGE="$IMAGE" "$PY" - <<'PY'
import importlib.metadata as md
import importlib.util
import os
import pkgutil
import re
import sys

def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()

sys.path.insert(0, os.getcwd())
for script in ("patching", "cache", "probes", "calibrate"):
    spec = importlib.util.spec_from_file_location(f"bench_{script}", f"benchmarks/{script}.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
for package in ("lab", "probes"):  # and every module of the lab (some are imported late)
    for info in pkgutil.walk_packages([package], prefix=f"{package}."):
        importlib.import_module(info.name)
image = {canon(n) for n in os.environ["IMAGE"].split()}
owners = md.packages_distributions()
wanted = {}
for top in {m.split(".")[0] for m in list(sys.modules)}:
    for dist in owners.get(top, []):
        name = canon(dist)
        if name in image or name.startswith("nvidia-") or name in ("torch", "triton", "steerlab"):
            continue
        wanted[name] = md.version(dist)
print(" ".join(f"{n}=={v}" for n, v in sorted(wanted.items())))
PY
)
echo "wheels for Python $PYVER: $WANTED"
rm -rf "$DEST"
mkdir -p "$DEST"
PLATFORMS=""
for n in 28 27 17; do PLATFORMS="$PLATFORMS --platform manylinux_2_${n}_x86_64"; done
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp $PLATFORMS --platform manylinux2014_x86_64 --platform any \
    -d "$DEST" $WANTED
MIB=$(du -sm "$DEST" | cut -f1)
echo "$(ls "$DEST" | wc -l) wheels, $MIB MiB in $DEST"
if [ "$MIB" -gt "$MAX_MIB" ]; then
    echo "too large to carry: $MIB MiB > $MAX_MIB MiB" >&2
    exit 1
fi
