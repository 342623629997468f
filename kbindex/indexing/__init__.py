"""Sources -> pages -> documents -> chunks -> store.Index: the sync rules, the one write path, runs."""
