"""Refresh the stored notebooks: ``python -m kdnb.store_notebooks`` (``make notebooks``).

Syncs every ``notebooks/NN_*.py`` (jupytext py:percent, the file to edit) into its paired
``.ipynb``, then executes the ``.ipynb`` in place with its own ``parameters`` cell (the
``smoke`` profile) from a clean ``outputs/<task>-smoke`` (:func:`smoke_task`: SST-2, on which
every model learns at the smoke profile's sizes), so the stored outputs are exactly what
``pytest --nbval-lax notebooks`` replays and compares.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from .config import load_config
from .pipeline import KERNEL_ARGS, notebooks
from .stages import NOTEBOOKS_DIR
from .utils import PROGRESS_ENV, get_logger

QUIET = {  # progress bars and warnings would only bloat the stored outputs
    PROGRESS_ENV: "off",  # kdnb's own bars (kdnb.utils.tqdm): TQDM_DISABLE yields to an explicit disable=
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "PYTHONWARNINGS": "ignore",
    "HF_HUB_OFFLINE": "1",
}


def smoke_task() -> str:
    """The task of the stored notebooks: the ``task = "..."`` of 01_data_prep's parameters cell."""
    import re

    return re.search(r'^task = "(\w+)"$', (NOTEBOOKS_DIR / "01_data_prep.py").read_text(), re.M)[1]


def main() -> int:
    import os

    import papermill as pm

    os.environ.update(QUIET)
    for py in sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py")):
        subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "--update", str(py)],
                       check=True)
    shutil.rmtree(load_config(smoke_task(), "smoke").out, ignore_errors=True)
    for nb in notebooks():
        get_logger().info(f"executing {nb.name} (smoke profile)")
        pm.execute_notebook(str(nb), str(nb), cwd=str(NOTEBOOKS_DIR), kernel_name="python3", progress_bar=False,
                            extra_arguments=KERNEL_ARGS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
