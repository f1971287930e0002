"""``python -m gateway.cli``: the same as the ``feedgate`` command."""

from gateway.cli.main import main

raise SystemExit(main())
