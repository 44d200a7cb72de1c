"""Galaxy morphology along the Hubble sequence from coadd stamps (``ml_morphology``).

Modules: `features` (stamps, channels, flags), `train` (supervised and
FixMatch semi-supervised training into a model package), `predict`
(package + stamps -> catalog; image files), `task`
(ClassifyMorphologyTask), `cli` (the ``meas-ml`` sub-commands), `quality`
(the held-out quality experiment), `bench` (speed), `metrics` and `demo`.
The architectures (``morph_dat``, ``morph_resnet``) live in
`lsst.meas.ml.models.morphology`.  Import the modules directly; this
package module imports nothing heavy.
"""

__all__: list[str] = []
