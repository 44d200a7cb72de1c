"""Asteroid taxonomy from survey colours.

Modules: `features` (Solar System sources -> per-object reduced magnitudes
and colours), `train` (synthetic LSST colours of the classy spectra and the
semi-supervised Gaussian mixture), `predict` (package + sources ->
``ml_asteroid_taxonomy``), `task` (ClassifyAsteroidsTask), `cli` (the
``meas-ml`` sub-commands), `metrics` (the quality report and the benchmark)
and `demo` (the demo's training and summary on the simulated survey).  Import them
directly; this module imports nothing heavy.
"""

__all__: list[str] = []
