"""Running an existing training script as a study's objective (a spec's ``command:``).

``run_command`` is that objective: in hpo's trial process it writes the trial's config copy,
starts the command in its own process group, copies its output to the trial directory's log
files while reading metrics from it (``[hpo] {json}`` lines, the spec's regex) and from
``hpo.report`` calls on the trial's socket, reports each epoch to the trial, prunes, and ends
the script's whole group however the trial ends. A script that crashed after reporting is
retried in the same trial directory, where ``{resume}`` finds its checkpoint.
"""

from hpo.script._launch import SLOT_GPUS_ENV, Launch, log_paths, prepare
from hpo.script._metrics import LineParser, Report
from hpo.script._objective import INTERRUPT_GRACE_S, ScriptFailed, run_command

__all__ = [
    "INTERRUPT_GRACE_S",
    "SLOT_GPUS_ENV",
    "Launch",
    "LineParser",
    "Report",
    "ScriptFailed",
    "log_paths",
    "prepare",
    "run_command",
]
