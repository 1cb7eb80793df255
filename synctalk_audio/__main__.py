"""``python -m synctalk_audio`` = the ``synctalk-audio`` command."""

from .cli import entry

entry()
