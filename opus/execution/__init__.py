"""Running jobs: dispatch, the runner, executors, phase-change notices."""
