# Retarget a meas_ml task at a repository that uses the older dataset type
# names (calexp, deepCoadd_calexp, goodSeeingDiff_*, objectTable_tract).
# Apply it to each task label:
#   pipetask run ... -C estimatePhotoz:$MEAS_ML_DIR/config/legacyNames.py \
#                    -C classifyDiaSources:$MEAS_ML_DIR/config/legacyNames.py
# Only the connection templates a task has are changed.
from lsst.meas.ml.butler.names import LEGACY_NAMES

for _key, _value in LEGACY_NAMES.items():
    if _key in config.connections.keys():  # noqa: F821 (config is given by pex_config)
        setattr(config.connections, _key, _value)  # noqa: F821
