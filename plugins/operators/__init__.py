"""Generic sync operators over a small system adapter. Imported as `erpsync.operators`."""
