"""Reference data (spec section 2): file formats and validation, the in-memory
snapshot the rating core reads, and the Redis store with atomic version switch."""
