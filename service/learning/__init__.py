"""The learning loop: adapter registry, retraining on reviewed tickets, the gate, shadowing, promotion, rollback.

What the API process may import (no models, no torch; an import contract checks it): `registry`, `store`, `views`,
`shadow`, `rollback`, `outcomes`, `checks`, `lease`, `stats`. What only the CLI and workers run (they import models
inside their functions): `dataset`, `gate`, `retrain`.
"""
