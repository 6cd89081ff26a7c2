"""Manual control by annotations on the Canary: `canary-stream.dev/action: promote|abort|pause|resume`
and `canary-stream.dev/set-weight: "30"`. The leader acts on them and removes them, so a command
survives a restart or a leader change and is carried out once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from canary_stream.controller.scheduler import Command

ACTION = "canary-stream.dev/action"
SET_WEIGHT = "canary-stream.dev/set-weight"
ANNOTATIONS = (ACTION, SET_WEIGHT)
ACTIONS = {c.value: c for c in (Command.PROMOTE, Command.ABORT, Command.PAUSE, Command.RESUME)}


@dataclass(frozen=True)
class ManualCommand:
    """One command read from the annotations, or why it cannot be carried out."""

    command: Command | None
    weight: int | None = None
    error: str = ""


def parse_manual(annotations: Mapping[str, str]) -> list[ManualCommand]:
    """The commands the annotations ask for (set-weight first, then the action), with an error
    entry for each unusable value."""
    out: list[ManualCommand] = []
    if SET_WEIGHT in annotations:
        raw = str(annotations[SET_WEIGHT]).strip()
        if raw.isdigit() and 0 <= int(raw) <= 100:
            out.append(ManualCommand(Command.SET_WEIGHT, int(raw)))
        else:
            out.append(ManualCommand(None, error=f"{SET_WEIGHT}: {raw!r} is not a weight 0-100"))
    if ACTION in annotations:
        raw = str(annotations[ACTION]).strip().lower()
        if raw in ACTIONS:
            out.append(ManualCommand(ACTIONS[raw]))
        else:
            out.append(ManualCommand(None, error=f"{ACTION}: {raw!r} is not one of {', '.join(ACTIONS)}"))
    return out


def annotations_for(command: Command, weight: int | None = None) -> dict[str, str]:
    """The annotations that ask for `command` (what `canary-stream promote ...` writes)."""
    if command is Command.SET_WEIGHT:
        if weight is None or not 0 <= weight <= 100:
            raise ValueError("set-weight needs a weight 0-100")
        return {SET_WEIGHT: str(weight)}
    if command.value not in ACTIONS:
        raise ValueError(f"{command.value} cannot be asked for by annotation")
    return {ACTION: command.value}
