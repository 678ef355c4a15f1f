"""Errors that end a run with a clear message (kept free of heavy imports: the CLI catches them)."""


class NonFiniteLoss(RuntimeError):
    """Training produced NaN/inf losses too many steps in a row."""


class RoleLost(RuntimeError):
    """A role's actors died (with their node) and cannot be replaced: the run stops (or auto-resumes)."""


class LearnerLost(RoleLost):
    """A learner rank died: a ZeRO group cannot shrink, so the run stops and resumes from a checkpoint."""


class VerifiersLost(RoleLost):
    """Verifiers died with their node and no node can place them again: the run stops with a checkpoint of its
    last completed step (scoring would otherwise wait for them forever)."""
