#!/usr/bin/env python3
"""Kept for the commands in older notes: runs `python -m bench.timing` (the code is in bench/)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.timing import main

sys.exit(main())
