#!/usr/bin/env bash
# Container entry point. `init`: create or upgrade Airflow's metadata DB, the Airflow pool `gpu`
# that training tasks queue in, and a local artifact root. Anything else runs as given.
set -euo pipefail

if [[ "${1:-}" == "init" ]]; then
    airflow db migrate
    airflow pools set gpu "${METACLIP_GPU_SLOTS:-1}" "training runs: this many at a time on the GPU machine"
    case "${METACLIP_ROOT}" in
        *://*) ;;  # an fsspec URL (s3://, gs://): nothing to create
        *) mkdir -p "${METACLIP_ROOT}" ;;
    esac
    echo "metaclip: Airflow DB migrated, pool gpu has ${METACLIP_GPU_SLOTS:-1} slot(s), artifacts in ${METACLIP_ROOT}"
    exit 0
fi
exec "$@"
