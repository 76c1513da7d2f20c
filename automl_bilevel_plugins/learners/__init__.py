"""Inner learners."""
