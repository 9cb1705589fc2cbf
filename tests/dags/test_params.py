"""Every DAG can be triggered from its form in the Airflow UI with the defaults: each param's default
is valid against its own JSON schema, and a param that may be left empty is optional in the form
(the UI marks a field required unless its schema type includes "null", and refuses a required
field that is empty)."""

from __future__ import annotations

import jsonschema
import pytest

from metaclip_tasks.core import params as P
from metaclip_tasks.stages.plan import Subset
from tests.dags.test_dags import DAG_IDS

pytestmark = pytest.mark.airflow


def _types(schema: dict) -> list[str]:
    kind = schema.get("type")
    return kind if isinstance(kind, list) else [kind]


def _ui_required(schema: dict) -> bool:
    """The UI's rule (airflow/ui FlexibleForm): a field is required unless its type includes "null"."""
    return bool(schema.get("type")) and "null" not in _types(schema)


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_every_default_is_valid_in_the_trigger_form(dagbag, dag_id: str) -> None:
    dag = dagbag.get_dag(dag_id)
    for name, param in dag.params.items():
        schema, default = param.schema, param.value
        jsonschema.validate(default, schema)  # what the form checks before it enables Trigger
        if default is None:
            assert "null" in _types(schema), (dag_id, name, schema)
            assert "enum" not in schema or None in schema["enum"], (dag_id, name, schema)
        if _ui_required(schema):  # a required field must not start empty
            assert default not in (None, ""), (dag_id, name, default)
    dag.params.validate()  # the run's params with no conf: what submitting the form does


def test_a_field_that_may_be_empty_is_nullable_in_its_schema() -> None:
    schema = P.json_schema(Subset, "metadata_version")
    assert schema["type"] == ["null", "string"]
    assert P.json_schema(Subset, "t")["type"] == ["null", "integer"]
    jsonschema.validate(None, schema)


def test_none_means_not_set_to_the_library() -> None:
    """The form's empty value (None) is the library's "not set"; the command line's "" still is too."""
    assert P.from_mapping(Subset, {"metadata_version": None}) == Subset()
    assert P.from_mapping(Subset, {"metadata_version": ""}).metadata_version == ""
    assert Subset().metadata_version is None


def test_the_match_dag_takes_an_empty_snapshot_as_the_logical_dates(dagbag) -> None:
    params = dagbag.get_dag("metaclip_match_snapshot").params
    snapshot = params.get_param("snapshot")
    assert snapshot.value is None and None in snapshot.schema["enum"] and "" not in snapshot.schema["enum"]
    for name in ("snapshot", "metadata_version", "raw_source", "pairs_source"):
        assert params.get_param(name).value is None and "null" in _types(params.get_param(name).schema), name
