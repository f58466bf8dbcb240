"""Run folders, metric sinks, timing and memory probes, atomic writes."""

from edgerlhf.tracking.memory import PeakMemory, peak_mb  # noqa: F401
from edgerlhf.tracking.run import RunDir, atomic_write_dir, atomic_write_json, atomic_write_text  # noqa: F401
