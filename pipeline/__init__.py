"""cdr-pipeline: exact, streaming rating of telephone call detail records.

Layout (see docs/architecture.md):

* ``pipeline.rating``  -- PURE rating core: Arrow batches in, Arrow batches out.
* ``pipeline.refdata`` -- reference data: CSV formats, validation, Redis store.
* ``pipeline.io``      -- adapters: Avro files/wire format, Kafka, Parquet lake.
* ``pipeline.runtime`` -- batching, rotation, the service loop (offsets committed with the data).
* ``pipeline.lake`` -- the lake: Delta tables on a local directory or S3.
"""

__version__ = "0.1.0"
