__version__ = "0.1.0"

from stn_repro import budgets as _budgets  # noqa: E402,F401  (registers the ${budget:...} config resolver)
