"""`python -m lstmcli` is the same as `lstm`."""

from lstmcli.cli import main

main()
