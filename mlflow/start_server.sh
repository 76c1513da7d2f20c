#!/usr/bin/env bash
# Start a local MLflow tracking server bound to 127.0.0.1 only (never 0.0.0.0).
#   mlflow/start_server.sh                    # http://127.0.0.1:5000, store in mlflow/server.db
#   PORT=5001 mlflow/start_server.sh
# Then: BilevelClassifier(tracking_uri="http://127.0.0.1:5000") or MLFLOW_TRACKING_URI=http://127.0.0.1:5000
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port="${PORT:-5000}"
store="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$here/server.db}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$here/mlartifacts}"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
# MLflow 3 starts a job runner and ~10 task-queue processes by default (GenAI features we do not use)
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
exec mlflow server --host 127.0.0.1 --port "$port" \
  --backend-store-uri "$store" --artifacts-destination "$artifacts" --workers 1
