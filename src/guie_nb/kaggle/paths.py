"""Where things live on Kaggle: the roots a kernel reads and writes, and the names of the files
that tie a kernel's output to the run that staged it. Neutral: standard library only, so
`model/`, `presets/`, the notebooks and `guie_nb.environment` use it without the Kaggle client
(or jupytext, papermill) installed.

Environment variables move the roots (tests and the rehearsal simulate Kaggle in a temporary
folder with them); the notebooks' bootstrap cell honours the same input variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

INPUT_ENV = "GUIE_KAGGLE_INPUT"
WORKING_ENV = "GUIE_KAGGLE_WORKING"
TEMP_ENV = "GUIE_KAGGLE_TEMP"
HELPERS_SLUG = "guie-nb-helpers"  # the dataset holding src/guie_nb; the bootstrap cell looks for it
HELPERS_VERSION_FILE = "guie_nb_version.json"  # beside guie_nb/ in the helper dataset
RUN_MARKER = "guie_run.json"  # written by each staged kernel at the top of its output
VERIFICATION_REPORT = "verification.json"  # the export's report on its submission.zip
SUBMIT_REPORT = "submit_report.json"  # the submit kernel's report on the zip it hands over
SUBMISSION = "submission.zip"


@dataclass(frozen=True)
class KaggleRoots:
    input: str = "/kaggle/input"
    working: str = "/kaggle/working"
    temp: str = "/kaggle/temp"  # not saved with the output: scratch such as generated demo data

    @classmethod
    def from_env(cls, env=None) -> "KaggleRoots":
        env = os.environ if env is None else env
        d = cls()
        return cls(env.get(INPUT_ENV) or d.input, env.get(WORKING_ENV) or d.working,
                   env.get(TEMP_ENV) or d.temp)
