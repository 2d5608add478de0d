"""`python -m service.cli` (how `run` starts its worker child with the same interpreter)."""

from service.cli import main

main()
