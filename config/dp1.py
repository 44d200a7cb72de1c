# Point the DIA task at a Data Preview 1-shaped repository: DIA sources come
# from the per-tract dia_source table (cut to each visit and detector), and
# the template is derived as visit image minus difference image (DP1 has no
# per-detector template).  Used by pipelines/DP1Pipeline.yaml; by hand:
#   pipetask run ... -C classifyDiaSources:$MEAS_ML_DIR/config/dp1.py
from lsst.meas.ml.butler.names import DP1_NAMES

config.connections.diaSourceTable = DP1_NAMES["diaSourceTable"]  # noqa: F821 (given by pex_config)
config.diaSourceLevel = "tract"  # noqa: F821
config.templateSource = "derived"  # noqa: F821
