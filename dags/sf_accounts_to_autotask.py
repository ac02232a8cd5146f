"""
### Salesforce accounts and contacts -> Autotask PSA companies and contacts

Every 20 minutes (the retired Autotask-Salesforce extension's interval), the Salesforce accounts changed
in the data interval become Autotask companies, then the changed contacts become contacts under their
company. The Salesforce ids live in the Autotask UDFs "Salesforce Company ID" and "Salesforce Contact ID"
(created when missing); a company with the same name, address line 1, city and state, and a contact with
the same company, first and last name, are linked instead of created again. A contact without an account
is quarantined, not imported. Account manager: the owner when an active Autotask resource has exactly his
first and last name, else the default resource of the mapping. Parent companies are written first.
Mappings: `include/mappings/sf_accounts_to_autotask.yaml`, `include/mappings/sf_contacts_to_autotask.yaml`.
Notifications: the `notify_recipients` get one summary per run (companies and contacts in one message,
with the run's Autotask calls against the tenant's hourly threshold) after a run that created or updated
something or has new errors (every run with `notify_every_run`), and an alert whenever a step fails; a clean-up of the Salesforce UDF in Autotask
un-maps the pair for good (`include/mappings/README.md`).
Launch by hand from the trigger form; the last and next run are Airflow's.
Wiring only (airflow dag built by `erpsync.flow_dag.build_flow_dag`): nothing heavy at parse time.
"""

from __future__ import annotations

from erpsync.flow_dag import AUTOTASK, SALESFORCE, FlowStage, build_flow_dag
from erpsync.flows import interval_schedule, sync_params
from erpsync.notifications import FlowNotifier, notify_params

dag = build_flow_dag(
    dag_id="sf_accounts_to_autotask",
    doc_md=__doc__,
    schedule=interval_schedule("*/20 * * * *"),
    source=SALESFORCE,
    target=AUTOTASK,
    lookups=[AUTOTASK],
    # Autotask writes one record per call: the batch only sets how often identities are recorded.
    params={**sync_params(batch_size=500), **notify_params()},
    then=[
        FlowStage(flow="sf_contacts_to_autotask", group="contacts", source=SALESFORCE, target=AUTOTASK),
    ],
    tags=["accounts", "contacts"],
    notifier=FlowNotifier,
)
