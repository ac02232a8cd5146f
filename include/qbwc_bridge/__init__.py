"""The QuickBooks Web Connector bridge: SOAP endpoint, jobs API and store. Imported as `erpsync.qbwc_bridge`."""
