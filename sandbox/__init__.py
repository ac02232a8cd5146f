"""Local simulators of Salesforce, Exact Online and QuickBooks Desktop. Imported as `erpsync.sandbox`."""
