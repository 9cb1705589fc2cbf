#!/usr/bin/env bash
# Container entry point.
# - Every command: with AIRFLOW_ADMIN_PASSWORD and a simple auth manager passwords file configured,
#   that file is written first ({"<AIRFLOW_ADMIN_USER>": "<password>"}, mode 600), so the API
#   server's log-in is the one from the environment and no password is generated or printed.
# - `init`: create or upgrade Airflow's metadata DB and the Airflow pool `gpu` that training
#   tasks queue in, create a local artifact root, then wait (METACLIP_ROOT_WAIT seconds, default
#   120) until the artifact root is writable: a bucket that another one-shot creates, an S3
#   endpoint still starting, or wrong keys (the last error is shown).
# - Anything else runs as given.
set -euo pipefail

passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-}"
if [[ -n "${AIRFLOW_ADMIN_PASSWORD:-}" && -n "${passwords_file}" ]]; then
    (umask 077 && python -c 'import json, os, sys
json.dump({os.environ.get("AIRFLOW_ADMIN_USER") or "admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, sys.stdout)' \
        > "${passwords_file}")
fi

if [[ "${1:-}" == "init" ]]; then
    airflow db migrate
    airflow pools set gpu "${METACLIP_GPU_SLOTS:-1}" "training runs: this many at a time on the GPU machine"
    case "${METACLIP_ROOT}" in
        *://*) ;;  # an fsspec URL (s3://, gs://): nothing to create here
        *) mkdir -p "${METACLIP_ROOT}" ;;
    esac
    python - <<'EOF'
import os, sys, time

from metaclip_tasks.core.files import filesystem

root = os.environ["METACLIP_ROOT"]
deadline = time.monotonic() + float(os.environ.get("METACLIP_ROOT_WAIT") or 120)
while True:
    try:
        fs, path = filesystem(root)
        fs.invalidate_cache()
        probe = f"{path.rstrip('/')}/.metaclip-init-probe"
        fs.pipe(probe, b"ok")
        fs.rm(probe)
        break
    except Exception as e:  # noqa: BLE001 - any failure means "not yet", until the deadline
        if time.monotonic() > deadline:
            sys.exit(f"metaclip: the artifact root {root} is not writable: {type(e).__name__}: {e}")
        time.sleep(2)
EOF
    echo "metaclip: Airflow DB migrated, pool gpu has ${METACLIP_GPU_SLOTS:-1} slot(s), artifacts in ${METACLIP_ROOT}"
    exit 0
fi
exec "$@"
