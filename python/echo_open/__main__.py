"""python -m echo_open: the echo-open command."""

from .cli import main

main()
