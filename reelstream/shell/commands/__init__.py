"""One module per CLI command group; ``reelstream.shell.cli`` wires them together."""
