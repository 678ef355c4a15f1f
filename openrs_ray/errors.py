"""Errors that end a run with a clear message (kept free of heavy imports: the CLI catches them)."""


class NonFiniteLoss(RuntimeError):
    """Training produced NaN/inf losses too many steps in a row."""
