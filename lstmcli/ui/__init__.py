"""Output for people: rich tables and displays, terminal and matplotlib plots."""
