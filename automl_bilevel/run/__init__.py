"""Running a search: the one loop, the run object, executors, checkpoints, interrupts, threads and devices."""
