"""From command-line arguments to units: mangling, globs, local files, templates and the --replace rules.

Arguments name units (``hello`` -> ``hello.service``) or local files (``units/hello.service``). A glob
(``hello@*``, ``web?.service``, ``[ab]*``) is expanded against the units in the registry and, for the
commands that create units, against the files beside it. Creation follows the reference: a unit already in
the registry is kept (with a warning when the local file differs) unless ``--replace`` allows replacing it;
otherwise it comes from the local file, else (for an instance) from its template in the registry or beside
the argument.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from fleetctl.client import FleetClient
from fleetctl.unit_files import LocalUnitFileError, read_unit_file
from fleetd import glob
from fleetd.errors import FleetError, UnitFileError, UnitNameError
from fleetd.model import TargetState, UnitName
from fleetd.registry.keyspace import UnitRecord
from fleetd.unitfile import requirements
from fleetd.unitfile.body import checked_unit_file
from fleetd.unitfile.names import UnitNameInfo, base_name, mangle, validate_unit_name
from fleetd.unitfile.unit import UnitFile
from fleetd.units import is_global, new_record

__all__ = ["CreateResult", "ResolveError", "create_units", "expand_args", "find_units", "is_global"]

Say = Callable[[str], None]


class ResolveError(FleetError):
    """An argument that cannot become a unit; the message is the reference's text (without the prefix)."""


@dataclass(frozen=True, slots=True)
class CreateResult:
    names: tuple[str, ...]  # every unit the arguments name, in argument order
    records: dict[str, UnitRecord]  # the registry record of each (after creation)
    created: tuple[str, ...]  # units this call created or replaced


def _dirname(arg: str) -> str:
    return arg.rsplit("/", 1)[0] if "/" in arg.rstrip("/") else ""


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _matches(pattern: str, name: str) -> bool:
    return glob.match(pattern, name) or glob.match(mangle(pattern), name)


def _is_template(name: str) -> bool:
    info = UnitNameInfo.parse(name)
    return info is not None and info.is_template


def _local_matches(directory: str, pattern: str) -> list[str]:
    try:
        entries = os.listdir(directory or ".")
    except OSError:
        return []
    found = []
    for entry in entries:
        if not _matches(pattern, entry) or not os.path.isfile(os.path.join(directory or ".", entry)):
            continue
        try:
            validate_unit_name(entry)
        except UnitNameError:
            continue
        found.append(entry)
    return found


async def expand_args(client: FleetClient, args: Sequence[str], *, local: bool, templates: bool) -> list[str]:
    """Replace glob arguments by what they match (registry units, and local unit files with ``local``),
    sorted by unit name; plain arguments are kept. Templates are left out unless ``templates``.

    A glob that matches nothing raises ResolveError when ``local`` (creating commands), else vanishes."""
    registry_names: list[str] | None = None
    out: list[str] = []
    for arg in args:
        pattern = base_name(arg)
        if not glob.has_magic(pattern):
            out.append(arg)
            continue
        if registry_names is None:
            registry_names = [record.name for record in await client.all_units()]
        directory = _dirname(arg)
        matched = {name for name in registry_names if _matches(pattern, name)}
        if local:
            matched.update(_local_matches(directory, pattern))
        if not templates:
            matched = {name for name in matched if not _is_template(name)}
        if not matched and local:
            raise ResolveError(f"unable to find any Unit matching {arg!r} in Registry or on filesystem")
        out.extend(_join(directory, name) for name in sorted(matched))
    return out


async def find_units(client: FleetClient, args: Sequence[str]) -> list[UnitRecord]:
    """The registry units the arguments name (globs expanded, missing names skipped), in argument order."""
    expanded = await expand_args(client, args, local=False, templates=True)
    names = list(dict.fromkeys(mangle(arg) for arg in expanded))
    found = await client.units(names)
    return [found[UnitName(name)] for name in names if UnitName(name) in found]


def _read_unit_file(path: str) -> UnitFile:
    """The usable unit file at ``path`` (``fleetctl verify`` judges files the same way); ResolveError naming
    the file, and the line when known, otherwise."""
    try:
        return read_unit_file(path)
    except LocalUnitFileError as exc:
        raise ResolveError(f"failed getting Unit({path}) from file: {exc}") from exc


def _registry_template(template: str, body: str) -> UnitFile:
    """A template's body from the registry, judged as the agents judge it."""
    try:
        return checked_unit_file(body)
    except UnitFileError as exc:
        raise ResolveError(
            f"template Unit({template}) in the Registry cannot be used: {exc}; replace it"
            f" (fleetctl submit --replace {template}) or destroy it"
        ) from exc


def _warn_unknown_keys(name: str, unit_file: UnitFile, warn: Say) -> None:
    for line in requirements.unknown_key_warnings(unit_file, name):
        warn(line)


@dataclass(slots=True)
class _Creator:
    client: FleetClient
    replace: bool
    allowed: Collection[TargetState]
    warn: Say
    say: Say

    async def run(self, args: Sequence[str]) -> CreateResult:
        names = [mangle(arg) for arg in args]
        for name in names:
            try:
                validate_unit_name(name)
            except UnitNameError as exc:
                raise ResolveError(str(exc)) from exc
        existing = dict(await self.client.units(names))
        templates = {info.template for n in names if (info := UnitNameInfo.parse(n)) and info.is_instance}
        template_records = dict(await self.client.units(sorted(templates - set(existing))))
        template_records.update({k: v for k, v in existing.items() if k in templates})
        template_bodies = await self.client.bodies(r.hash for r in template_records.values())
        writes: dict[str, tuple[UnitRecord, str]] = {}
        seen: set[str] = set()
        for arg, name in zip(args, names, strict=True):
            if name in seen:
                continue
            seen.add(name)
            if name in existing:
                self._compare_existing(arg, name, existing[UnitName(name)], writes)
                continue
            unit_file = self._source(arg, name, template_records, template_bodies)
            _warn_unknown_keys(name, unit_file, self.warn)
            writes[name] = new_record(name, unit_file)
        # Only now, with every argument resolved, does anything reach the registry (the schema key included).
        await self.client.ensure_schema()
        await self.client.put_units(list(writes.values()))
        records = dict(existing)
        records.update({UnitName(name): record for name, (record, _) in writes.items()})
        ordered = tuple(dict.fromkeys(names))
        return CreateResult(ordered, {str(k): v for k, v in records.items()}, tuple(writes))

    def _local_for(self, arg: str, name: str) -> tuple[str, str] | None:
        """(path, kind) of the local file that stands for ``name``: the file itself or its template."""
        path = _join(_dirname(arg), name)
        if os.path.isfile(path):
            return path, "local unit file"
        info = UnitNameInfo.parse(name)
        if info is not None and info.is_instance:
            template_path = _join(_dirname(arg), info.template)
            if os.path.isfile(template_path):
                return template_path, "local template unit file"
        return None

    def _compare_existing(
        self, arg: str, name: str, record: UnitRecord, writes: dict[str, tuple[UnitRecord, str]]
    ) -> None:
        local = self._local_for(arg, name)
        if local is None:
            return
        path, kind = local
        unit_file = _read_unit_file(path)
        if unit_file.hash == record.hash:
            if self.replace:
                self.say(f"Found same Unit({name}) in Registry, nothing to do")
            return
        if not self.replace:
            self.warn(
                f"WARNING: Unit {name} in registry differs from {kind} {path}. Add --replace to override."
            )
            return
        if record.target_state not in self.allowed:
            self.warn(
                f"Warning: can not replace Unit({name}) in state '{record.target_state.value}',"
                " use the appropriate command"
            )
            return
        _warn_unknown_keys(name, unit_file, self.warn)
        writes[name] = new_record(name, unit_file)

    def _source(
        self,
        arg: str,
        name: str,
        template_records: Mapping[UnitName, UnitRecord],
        template_bodies: Mapping[str, str],
    ) -> UnitFile:
        """The unit file to create ``name`` from."""
        path = _join(_dirname(arg), name)
        if os.path.isfile(path):
            return _read_unit_file(path)
        info = UnitNameInfo.parse(name)
        if info is None:
            raise ResolveError(f"error extracting information from unit name {name}")
        if not info.is_instance:
            raise ResolveError(f"unable to find Unit({name}) in Registry or on filesystem")
        record = template_records.get(UnitName(info.template))
        template_path = _join(_dirname(arg), info.template)
        if record is not None and record.hash in template_bodies:
            unit_file = _registry_template(info.template, template_bodies[record.hash])
            if os.path.isfile(template_path) and _read_unit_file(template_path).hash != record.hash:
                self.warn(
                    f"WARNING: Unit {info.template} in registry differs from local template unit file"
                    f" {template_path}. Add --replace to override."
                )
            return unit_file
        if os.path.isfile(template_path):
            return _read_unit_file(template_path)
        raise ResolveError(
            f"failed getting Unit({name}) from template: unable to find template Unit({info.template})"
            " in Registry or on filesystem"
        )


async def create_units(
    client: FleetClient,
    args: Sequence[str],
    *,
    replace: bool,
    allowed: Collection[TargetState],
    warn: Say,
    say: Say,
    templates: bool,
) -> CreateResult:
    """Expand globs, then create the units that are missing (or replaced) in one batch of writes.

    Every argument is resolved (and every local file it reads checked) before anything is written, so an
    error leaves the registry unchanged."""
    expanded = await expand_args(client, args, local=True, templates=templates)
    return await _Creator(client, replace, allowed, warn, say).run(expanded)
