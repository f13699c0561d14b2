"""Switchboard: the plugin modules that make up opsverify's pytest side. Nothing else lives here."""

pytest_plugins = [
    "fixtures.profile",
    "fixtures.parametrize",
    "fixtures.actions",
    "fixtures.components",
    "fixtures.backups",
    "fixtures.maintenance",
    "fixtures.lifecycle",
    "fixtures.logfiles",
    "fixtures.drills",
    "fixtures.recovery",
    "fixtures.scanners",
    "fixtures.kubernetes",
    "fixtures.redissecurity",
    "fixtures.redishealth",
    "fixtures.security",
    "fixtures.hostsecurity",
    "fixtures.pgsecurity",
    "fixtures.pghealth",
    "fixtures.pgqueries",
    "fixtures.markers",
    "fixtures.waivers",
    "fixtures.reporting",
    "fixtures.history",  # before fixtures.summary, which imports it
    "fixtures.summary",
    "fixtures.monitoring",  # its run_finished hook wraps theirs: it publishes after the summary is written
    "pytester",  # the suite's own tests (tests/) drive checks/ through it
]
