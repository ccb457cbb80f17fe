"""``python -m tokenwire``: the ``tokenwire`` command (see :mod:`tokenwire.cli`)."""

from tokenwire.cli import main

raise SystemExit(main())
