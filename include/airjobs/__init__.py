"""airjobs: the Agave v2 Jobs service as an Apache Airflow 3 plugin (core package, no Airflow imports)."""

SERVICE_VERSION = "2.2.27-airjobs"
