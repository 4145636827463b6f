"""Adapters around the pure core: Avro files and wire format, Kafka, Parquet lake."""
