"""One module per CLI command group; ``reelstream.cli`` wires them together."""
