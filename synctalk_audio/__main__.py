"""``python -m synctalk_audio`` = the ``synctalk-audio`` command."""

import sys

from .cli import main

sys.exit(main())
