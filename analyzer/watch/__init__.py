"""``analyze watch``: the live view of a capture in progress, fed by the addon's watch channel."""
