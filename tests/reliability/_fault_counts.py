"""The fault suite's counters (a module of its own: ``conftest`` is an ambiguous name here, see
tests/_tiny.py). ``cases``: bad inputs tried; ``clean``: refused with the named eossl error and a
message naming the problem; ``kills``: SIGKILLs of a real process followed by load + resume."""

RESULTS = {"cases": 0, "clean": 0, "kills": 0}
