# The project image: the official Airflow image of the pinned version plus this package.
# Used by every Airflow service and by the Web Connector bridge in docker-compose.yaml.
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11

USER root
COPY --chown=airflow:0 . /opt/erpsync
USER airflow
# Install under the same lock as development so the image matches what the tests ran against.
RUN pip install --no-cache-dir -c /opt/erpsync/constraints.txt -r /opt/erpsync/requirements.txt \
 && pip install --no-cache-dir --no-deps /opt/erpsync

ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/erpsync/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/erpsync/plugins \
    ERPSYNC_MAPPINGS_DIR=/opt/erpsync/include/mappings
