"""Thin Airflow adapters of airjobs: auth and DAG triggering for the REST facade, the monitor sensor and
its trigger. The domain logic lives in ``include/airjobs``."""

LIFECYCLE_DAG_ID = "airjobs_lifecycle"


def _register_transports() -> None:
    from airjobs import transports

    def ssh(system, section):
        from airjobs_airflow.transport_ssh import factory

        return factory(system, section)

    transports.register("SSH", ssh)
    transports.register("SFTP", ssh)


_register_transports()
