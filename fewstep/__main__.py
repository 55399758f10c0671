"""``python -m fewstep`` is the ``fewstep`` command."""

from fewstep.app.cli import main

raise SystemExit(main())
