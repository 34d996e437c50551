"""``qallegro.calculator.QAllegroCalculator``: the ASE calculator (lives in :mod:`qallegro.deploy`)."""

from qallegro.deploy.calculator import QAllegroCalculator

__all__ = ["QAllegroCalculator"]
