"""`python -m mrlkit.cli`."""

from . import main

main()
