"""erpsync: keep Salesforce, Exact Online and QuickBooks Desktop in step from Airflow.

Kept import-free on purpose: DAG files import from this package at parse time, so nothing heavy
(pandas, GX, simple-salesforce, lxml) may load here.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
