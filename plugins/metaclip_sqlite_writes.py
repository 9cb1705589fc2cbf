"""The API server on a SQLite metadata DB (``make airflow``, the tests' embedded Airflow) takes one
writing request at a time (``metaclip_tasks.dev.local_airflow.SerializedWrites`` says why: without it
the trigger form can hang the API server for minutes). Nothing on any other database."""

from __future__ import annotations

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from metaclip_tasks.dev.local_airflow import SerializedWrites

ON_SQLITE = conf.get("database", "sql_alchemy_conn", fallback="").startswith("sqlite")


class MetaclipSqliteWrites(AirflowPlugin):
    name = "metaclip_sqlite_writes"
    fastapi_root_middlewares = (
        [{"middleware": SerializedWrites, "args": [], "kwargs": {}, "name": "One writing request at a time (SQLite)"}]
        if ON_SQLITE
        else []
    )
