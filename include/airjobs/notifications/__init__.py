"""Job notifications (spec §6, decision D9): the pure core of delivery, with no Airflow in it.

* ``macros``: Agave's ``${NAME}`` template variables (§6.4 Table 3), for webhook URLs and email bodies;
* ``messages``: the email a notification sends (§6.2);
* ``retry``: the notification policy and its retry schedule (§6.1);
* ``webhook``: signed webhook delivery through the egress guard, and the URL check at registration.
"""
