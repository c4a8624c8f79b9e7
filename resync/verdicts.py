"""What becomes of each listed build in a run: a verdict, said in its line and counted in the summary."""

RIGHT, CORRECTED, SUPERSEDED, RUNNING, SKIPPED, NOT_REACHED, LEFT, FAILED = (
    "already right",
    "corrected",
    "superseded",
    "running",
    "skipped",
    "not reached",
    "left for a later run",
    "failed",
)
