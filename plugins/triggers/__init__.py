"""Async triggers that wait on external work without holding a worker slot. Imported as `erpsync.triggers`."""
