"""Allows `python -m qonic_proxy`."""

from qonic_proxy.cli.main import main

raise SystemExit(main())
