"""Avro, once: the codec shared by the streaming wire decoder (:mod:`pipeline.io.wire`)
and the batch file reader/writer (:mod:`pipeline.io.avro_files`).

Modules, each owning one concern:

* :mod:`~pipeline.avro.schemas` -- the shipped schemas (``schemas/*.avsc``) and
  schemaless datum encode/decode with fastavro.
* :mod:`~pipeline.avro.varint` -- zig-zag varints: scalar, vectorized encoders and sizes.
* :mod:`~pipeline.avro.types` -- the compiled type model of a parsed schema and what
  the columnar decoder (polars + the structural scan) can read.
* :mod:`~pipeline.avro.scan` -- the vectorized structural scan of many datums at once.
* :mod:`~pipeline.avro.resolution` -- writer -> reader ``CallEvent`` resolution on
  Arrow columns (the plan of a writer schema, projection onto ``EVENT_SCHEMA``).
* :mod:`~pipeline.avro.decode` -- datums -> writer-shaped Arrow tables: polars
  blocks, fastavro as the authority, bisection.
* :mod:`~pipeline.avro.container` -- object container files: header, block framing,
  sync markers, salvage of damaged stretches, writing headers and blocks.
* :mod:`~pipeline.avro.encode` -- Arrow tables -> Avro datums, vectorized.

One datum gets one answer on both paths: a datum that is not a record of its writer
schema is ``DECODE_ERROR``; a well-formed datum whose values the reader cannot
accept is passed on and judged by the rating core (R1), e.g. an enum symbol the
reader does not know is ``INVALID_VALUE`` (``docs/decisions.md``).
"""
