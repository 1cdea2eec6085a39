"""Reports a person reads in a minute: one self-contained report.html per run directory,
TensorBoard event files, optional MLflow tracking, and the terminal views.

    from reflectlm.report import write_report, write_tensorboard, log_mlflow, list_runs, show
    write_report("runs/demo")          # -> runs/demo/report.html (the loop calls it every round)
    write_tensorboard("runs/demo")     # -> runs/demo/tb/
    log_mlflow("runs/demo")            # -> sqlite:///runs/mlflow.db (needs the [mlflow] extra)
    list_runs("runs"); show("runs/demo")

Reads both run layouts: a loop run (rounds/NN/) and a plain training run (a single round 0).
matplotlib, torch's SummaryWriter and mlflow load inside the functions that use them.
"""

from .html import SECTIONS, write_report
from .runs import Round, Run, load_run
from .tensorboard import write_tensorboard
from .terminal import list_runs, show, summarize
from .tracking import log_mlflow

__all__ = ["SECTIONS", "Round", "Run", "list_runs", "load_run", "log_mlflow", "show", "summarize", "write_report",
           "write_tensorboard"]
