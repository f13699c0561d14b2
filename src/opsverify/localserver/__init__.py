"""Servers and programs run on this machine: free ports, processes, a PostgreSQL cluster, a redis-server.

Used by the drills (scratch servers) and by the sandbox; all PostgreSQL programs through ``pgtools``.
"""
