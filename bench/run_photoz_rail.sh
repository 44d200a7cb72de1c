#!/usr/bin/env bash
# Photo-z benchmark against RAIL (FlexZBoost, KNN) on RAIL's cosmoDC2 split.
# RAIL's estimators live in their own environment, .venv-rail (created here
# on first use with pinned versions); meas_ml is used from the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv-rail/bin/python ]; then
  "$PYTHON" -m venv .venv-rail
  .venv-rail/bin/pip install -q "torch==2.13.0"
  .venv-rail/bin/pip install -q "pz-rail-base==2.0.11" "pz-rail-flexzboost==2.0.3" "pz-rail-sklearn==2.0.3" \
    "safetensors==0.8.0" "lsst-pex-config==30.0.0" "lsst-utils==30.0.0" "astropy==8.0.2" \
    "matplotlib==3.11.2" "scipy==1.17.1" "h5py==3.16.0"
fi
PYTHONPATH=python exec .venv-rail/bin/python bench/photoz_rail.py "$@"
