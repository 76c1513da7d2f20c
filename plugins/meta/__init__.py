"""Built-in meta-learners."""
