"""Machine learning for the Rubin Observatory Science Pipelines.

``lsst.meas.ml`` provides PipelineTasks that run PyTorch models on Butler
data products (visit images, coadds, difference images, object and DIA
source tables), the model-package format those tasks read, the trainers
that write them, and a simulated mini-survey to run everything without
Rubin data.
"""

__version__ = "0.1.0"
