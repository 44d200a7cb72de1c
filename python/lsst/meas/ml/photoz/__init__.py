"""Photometric redshifts: the multiple-bin regression network (MBRNN).

Modules: `features` (flux columns and features), `pdf` (PDF summaries and
compact storage), `train` (trainer writing a model package), `predict`
(package + table -> photo-z catalog), `influence` (training-sample
influence and spectroscopic target ranking), `task` (EstimatePhotozTask)
and `cli` (the ``meas-ml`` sub-commands).  Import them directly; this
package module imports nothing heavy so the model registry can use
`features` without a cycle.
"""

__all__: list[str] = []
