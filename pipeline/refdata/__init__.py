"""Reference data (spec section 2), the adapter side: file formats and validation,
the generator of real-size sets, and the Redis store with atomic version switch.

The in-memory snapshot the rating core reads (:class:`ReferenceData`) belongs to the
pure core, in :mod:`pipeline.rating.reference`; this package builds it and never the
other way round (``pipeline.rating`` imports nothing from here)."""
