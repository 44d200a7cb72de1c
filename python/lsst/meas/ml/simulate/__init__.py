"""Simulated mini-survey: the embedded default data set for the demo and the tests.

`simulate_survey` draws a GalSim survey in memory (`SurveyConfig` sets its
size: `SurveyConfig.tiny` for tests, `SurveyConfig.default` for the demo);
`build_repo` writes one into a SQLite-backed Butler repository with every
dimension record, in the RUN collection `SIM_RUN` chained from
`SIM_COLLECTION`.
"""

from .config import *
from .instrument import *
from .repo import *
from .survey import *
