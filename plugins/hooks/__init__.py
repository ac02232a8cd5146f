"""Hooks, one per external system: connection handling, auth, paging and rate limits. Imported as `erpsync.hooks`."""
