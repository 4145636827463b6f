"""Streaming: batching, rotation, the service loop; offsets are committed with the data (one Delta commit, :meth:`pipeline.lake.lake.Lake.commit_partition`)."""
