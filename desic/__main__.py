"""``python -m desic ...`` runs the ``desic`` command."""

from .cli import main

main()
