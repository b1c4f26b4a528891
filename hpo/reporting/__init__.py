"""What a study looks like to a person: the HTML report and the live watch."""

from hpo.reporting._html import ReportError, write_report
from hpo.reporting._watch import RunningTrial, Snapshot, snapshot, watch

__all__ = ["ReportError", "RunningTrial", "Snapshot", "snapshot", "watch", "write_report"]
