"""PURE rating core.

Nothing in this package performs I/O, reads the clock or the environment, or
imports Kafka, Redis or logging. It maps Arrow tables of call events plus
in-memory reference data and tariffs to Arrow tables of rated records and dead
letters (rules R1-R11), and rated records to invoice lines (C1-C4).
"""
