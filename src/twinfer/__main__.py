from __future__ import annotations

import sys

from twinfer.cli import main

sys.exit(main())
