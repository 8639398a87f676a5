"""``stomper run``: declared tasks, each an agent's work on the files it names."""
