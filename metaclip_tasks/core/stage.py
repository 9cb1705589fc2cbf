"""The one kind of stage: a name, an explicit version, a params dataclass, typed inputs and ``build``.

The ``metaclip`` command line, ``metaclip demo`` and every DAG task run stages through
:func:`run`, so each stage exists once.  ``version`` is an integer bumped by hand when the
stage's output for the same inputs changes; with the canonical params, the input versions,
the fingerprints of external files and the versions of ``libraries`` it makes the artifact's
version (:func:`metaclip_tasks.core.artifacts.version_for`).  Editing a docstring changes nothing.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metaclip_tasks.core import params as P
from metaclip_tasks.core.artifacts import Artifact, ArtifactStore, Output, version_for
from metaclip_tasks.core.errors import CurationError
from metaclip_tasks.core.files import Stored

InputValue = Artifact | Sequence[Artifact] | None


@dataclass(frozen=True)
class Input:
    """An input role: which kind of artifact it takes, one or many, required or not."""

    stage: str
    many: bool = False
    optional: bool = False


@dataclass
class Build:
    """What a stage's ``build`` gets: checked params, resolved inputs, the output folder, a Dask
    client (or None: run in this process), a log and the store (for work kept across runs)."""

    params: Any
    inputs: dict[str, Any]
    output: Output
    client: Any = None
    log: Callable[[str], object] = print
    store: ArtifactStore | None = None

    def __getitem__(self, role: str) -> Any:
        return self.inputs[role]

    def record(self, written: Sequence[Stored]) -> None:
        """Files written straight into the output folder (by Dask workers) as part of the artifact."""
        for w in written:
            self.output.record(w)


@dataclass(frozen=True)
class Stage:
    """One row of the stage table."""

    name: str
    version: int
    params: type
    build: Callable[[Build], dict[str, Any] | None]
    inputs: Mapping[str, Input] = field(default_factory=dict)
    produces: str = ""  # the artifact kind (its folder); default: the stage's name
    libraries: tuple[str, ...] = ()  # distributions whose version changes the output
    external: Callable[[Any], Any] | None = None  # fingerprints of files outside the store

    @property
    def artifact(self) -> str:
        return self.produces or self.name

    def check_inputs(self, inputs: Mapping[str, InputValue]) -> dict[str, Any]:
        """Inputs by role, each of the declared kind and multiplicity; anything else is an error."""
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown:
            raise CurationError(f"stage {self.name} takes no input {', '.join(unknown)}")
        checked: dict[str, Any] = {}
        for role, spec in self.inputs.items():
            value = inputs.get(role)
            if value is None or (spec.many and isinstance(value, Sequence) and not len(value)):
                if not spec.optional:
                    raise CurationError(f"stage {self.name} needs its {role} input ({spec.stage} artifacts)")
                checked[role] = [] if spec.many else None
                continue
            items = list(value) if spec.many and isinstance(value, Sequence) else [value]
            if not spec.many and isinstance(value, (list, tuple)):
                raise CurationError(f"stage {self.name} takes one {role} input, got {len(value)}")
            for item in items:
                if not isinstance(item, Artifact) or item.stage != spec.stage:
                    got = f"a {item.stage} artifact" if isinstance(item, Artifact) else repr(item)
                    raise CurationError(f"stage {self.name}: input {role} must be a {spec.stage} artifact, got {got}")
            checked[role] = items if spec.many else value
        return checked

    def key(self, params: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """What the version hashes."""
        versions = {
            role: ([a.version for a in v] if isinstance(v, list) else v.version if v else None)
            for role, v in sorted(inputs.items())
        }
        return {
            "stage": self.name,
            "stage_version": self.version,
            "params": P.identity(params),
            "inputs": versions,
            "external": self.external(params) if self.external else None,
            "libraries": library_versions(self.libraries),
        }


def library_versions(names: Sequence[str]) -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in names}


def find(
    store: ArtifactStore, stage: Stage, params: Any, inputs: Mapping[str, InputValue] | None = None
) -> Artifact | None:
    """The published artifact of ``stage`` for these params and inputs, or None: never builds."""
    params = P.check(params)
    checked = stage.check_inputs(inputs or {})
    return store.get(stage.artifact, version_for(stage.key(params, checked)))


def run(
    store: ArtifactStore,
    stage: Stage,
    params: Any,
    inputs: Mapping[str, InputValue] | None = None,
    *,
    client: Any = None,
    log: Callable[[str], object] = print,
) -> Artifact:
    """The artifact of ``stage`` for ``params`` and ``inputs``: a cache hit, or built now.

    Params and inputs are checked before anything is written."""
    if not isinstance(params, stage.params):
        raise CurationError(f"stage {stage.name} takes {stage.params.__name__} params, got {type(params).__name__}")
    params = P.check(params)
    checked = stage.check_inputs(inputs or {})
    for value in checked.values():  # every input file is there with its size; checksums as each is read
        for artifact in value if isinstance(value, list) else [value] if value else []:
            artifact.verify(checksums=False)
    key = stage.key(params, checked)
    version = version_for(key)
    header = {
        "params": P.to_dict(params),
        "inputs": [
            {"role": role, **a.ref}
            for role, v in checked.items()
            for a in (v if isinstance(v, list) else [v] if v else [])
        ],
        "code": {k: key[k] for k in ("stage", "stage_version", "libraries")},
        "external": key["external"],
    }

    def build(output: Output) -> dict[str, Any] | None:
        return stage.build(Build(params, checked, output, client, log, store))

    return store.publish(stage.artifact, version, header, build)
