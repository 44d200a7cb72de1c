"""Difference-image source classification: reliability (real/bogus) and a
coarse class for every DIA source.

Modules: `~lsst.meas.ml.dia.features` (stamps, channels, labels),
`~lsst.meas.ml.dia.predict` (score table), `~lsst.meas.ml.dia.task`
(``ClassifyDiaSourcesTask``), `~lsst.meas.ml.dia.alert_scoring` (alert
packets), `~lsst.meas.ml.dia.train` (trainer), `~lsst.meas.ml.metrics`
(metrics), `~lsst.meas.ml.dia.bench` (latency), `~lsst.meas.ml.dia.cli`
(``meas-ml ... dia``).
"""

__all__: list[str] = []
