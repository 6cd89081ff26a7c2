"""Flagger's canary phases (`status.phase`)."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """The phases of a Canary, spelled as Flagger spells them (British `Finalising`)."""

    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    WAITING_PROMOTION = "WaitingPromotion"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"


#: Phases in which the analysis runs and verdicts matter.
ANALYSING = frozenset({Phase.PROGRESSING, Phase.WAITING_PROMOTION})
#: Phases after which a new revision starts a new run.
SETTLED = frozenset({Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED, Phase.WAITING})
#: Terminal outcomes of one run.
FINISHED = frozenset({Phase.SUCCEEDED, Phase.FAILED})
