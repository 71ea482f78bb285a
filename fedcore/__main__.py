"""`python -m fedcore ...` runs the `fedcore` command line (see `fedcore.cli`)."""

from fedcore.cli import main

raise SystemExit(main())
