"""imagebot: the platform-neutral core, the chat adapters and the CLI."""
