"""The erpsync pages inside the Airflow UI: sync page per flow, quarantine with retry, activity log.

`erpsync.ui.app.create_app()` builds the FastAPI app that `plugins/erpsync_ui.py` mounts under the
api-server at `/erpsync`; `erpsync.ui.render` turns the state store's rows into HTML and inline SVG
(no scripts or styles from elsewhere: the UI must work without internet).
"""
