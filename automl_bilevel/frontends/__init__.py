"""What users call: the scikit-learn estimators, the meta estimator, the CLI, experiment files and data loaders."""
