"""``python -m opsverify`` = the ``opsverify`` command."""

from __future__ import annotations

import sys

from opsverify.cli import main

sys.exit(main())
