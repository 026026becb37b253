#!/usr/bin/env bash
# Build the challenge container and export it for upload to grand-challenge.
#   docker/build.sh [task1|task3] [cpu|cuda]   ->  modalsurv-<task>-<variant>.tar.gz
# Needs a Docker engine. Test it locally with /input and /output folders:
#   docker run --rm --network none -v $PWD/input:/input:ro -v $PWD/output:/output \
#       -v $PWD/model:/opt/ml/model:ro modalsurv-task1-cpu
# where model/ is what `modalsurv export-model RUN --out model` wrote.
set -euo pipefail
task="${1:-task1}"
variant="${2:-cpu}"
case "$task" in task1|task3) ;; *) echo "task must be task1 or task3" >&2; exit 2;; esac
case "$variant" in
  cpu) dockerfile=docker/Dockerfile ;;
  cuda) dockerfile=docker/Dockerfile.cuda ;;
  *) echo "variant must be cpu or cuda" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
tag="modalsurv-${task}-${variant}"
docker build --build-arg TASK="$task" -f "$dockerfile" -t "$tag" .
docker save "$tag" | gzip -c > "${tag}.tar.gz"
echo "exported ${tag}.tar.gz"
