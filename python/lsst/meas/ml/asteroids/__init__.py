"""Asteroid taxonomy from survey colours (issue 12).

Modules: `features` (Solar System sources -> per-object reduced magnitudes
and colours), `train` (synthetic LSST colours of the classy spectra and the
semi-supervised Gaussian mixture), `predict` (package + sources ->
``ml_asteroid_taxonomy``), `task` (ClassifyAsteroidsTask), `cli` (the
``meas-ml`` sub-commands) and `metrics` (the quality report).  Import them
directly; this module imports nothing heavy.
"""

__all__: list[str] = []
