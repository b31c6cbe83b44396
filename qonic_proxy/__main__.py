"""Allows `python -m qonic_proxy`."""

from qonic_proxy.cli import main

raise SystemExit(main())
