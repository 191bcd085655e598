"""reelstream."""
