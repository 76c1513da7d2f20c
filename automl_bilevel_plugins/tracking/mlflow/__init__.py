"""MLflow tracking, as a plugin: one parent run per fit or CLI run, one child run per trial.

Where runs go: the estimator's ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else
``sqlite:///mlflow.db`` in the working directory. The store is checked before any work is done.
A ``fit`` inside an active MLflow run (``with mlflow.start_run():``) nests its parent run under it.

The search never waits on the store:

- every trial is first appended to a local **spool** (JSON lines, one ``os.write`` per record, so a
  kill leaves at most a torn last line) and put on a queue;
- a background **writer** thread takes the queue in batches and writes children and the parent's
  step metrics (``log_batch``); when the store fails it backs off and retries, never blocking the
  search;
- at the end the writer is given ``AUTOML_BILEVEL_FLUSH_TIMEOUT`` seconds (default 60) to write the
  rest, the final artifacts and the parent's terminal status. A second Ctrl-C during that wait stops
  writing trials, still ends the parent, and leaves the rest in the spool;
- the spool is deleted once everything is written. Otherwise its folder is named in a warning and
  ``automl-bilevel sync`` writes it later.

Each trial appears exactly once: a child carries its trial number as the tag
``automl_bilevel.trial``; after any failure the writer reads back which children exist before it
creates more, and at the end (and in ``sync``) a child duplicated by an HTTP retry is deleted.
Metrics carry the trial's own timestamp, so writing them again is a no-op for the store.

The spool folder: ``AUTOML_BILEVEL_SPOOL_DIR``, else ``mlflow-spool/`` next to a SQLite store,
else ``~/.cache/automl_bilevel/spool`` (``$XDG_CACHE_HOME``). One sub-folder per parent run.

Modules: :mod:`.uri` (where runs go, checks), :mod:`.store` (the idempotent run writer; standard library
and mlflow only), :mod:`.spool` (the spool files), :mod:`.follow` (the writer process), :mod:`.writers`
(the writer thread and the writer process, as the listener drives them), :mod:`.listener` (the run
listener), :mod:`.model` (the fitted model as an MLflow model), :mod:`.plots` (the run's figures),
:mod:`.sync` (``automl-bilevel sync``), :mod:`.plugin` (the hook implementations, the entry point).
This package's ``__init__`` imports nothing: the writer process starts with ``python -m
automl_bilevel_plugins.tracking.mlflow.follow`` and imports only the standard library and mlflow.
"""
