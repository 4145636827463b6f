"""Batching, file rotation and checkpointing: the only place offsets are committed."""
