"""Instruction templates of the tabletop suite.

Each task family has a training set of paraphrases and a held-out set that no
demonstration uses, for testing whether a policy generalises to new wording.
"""

from __future__ import annotations

import numpy as np

OBJECT_COLORS = ("red", "green", "blue")
ZONE_COLORS = ("yellow", "white")
FAMILIES = ("reach", "push", "lift")

TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": (
        "reach the {object} cube",
        "move to the {object} block",
        "touch the {object} cube",
        "go to the {object} block",
    ),
    "push": (
        "push the {object} cube into the {zone} zone",
        "slide the {object} block to the {zone} area",
        "move the {object} cube onto the {zone} square",
    ),
    "lift": (
        "pick up the {object} cube",
        "lift the {object} block",
        "grab the {object} cube and raise it",
    ),
}

HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": (
        "put the gripper next to the {object} cube",
        "approach the {object} block",
    ),
    "push": (
        "shove the {object} block onto the {zone} zone",
        "nudge the {object} cube into the {zone} area",
    ),
    "lift": (
        "raise the {object} block off the table",
        "grasp the {object} cube and pick it up",
    ),
}

INSTRUCTION_SETS = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES}


def templates_for(family: str, instruction_set: str = "train") -> tuple[str, ...]:
    """Return the paraphrase templates of one task family."""
    if instruction_set not in INSTRUCTION_SETS:
        raise ValueError(
            f"unknown instruction set {instruction_set!r}; choose one of {sorted(INSTRUCTION_SETS)}"
        )
    return INSTRUCTION_SETS[instruction_set][family]


def sample_instruction(
    rng: np.random.Generator, family: str, obj: str, zone: str | None, instruction_set: str = "train"
) -> str:
    """Draw one paraphrase of the task and fill in the object and zone names."""
    options = templates_for(family, instruction_set)
    template = options[int(rng.integers(len(options)))]
    return template.format(object=obj, zone=zone or "")


def vocabulary() -> list[str]:
    """Return every word any instruction of the suite can contain, sorted."""
    words: set[str] = set(OBJECT_COLORS) | set(ZONE_COLORS)
    for table in INSTRUCTION_SETS.values():
        for options in table.values():
            for template in options:
                filled = template.format(object="", zone="")
                words.update(filled.split())
    return sorted(words)
