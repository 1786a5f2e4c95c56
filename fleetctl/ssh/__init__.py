"""fleetctl's SSH side: connections with strict known_hosts (``tunnel``, the only paramiko importer), the
host-key policy (``known_hosts``, ``host_keys``), settings (``config``), the unix-socket ``forwarder`` for
``--tunnel``, the reusable tunnel session (``master``, the background process; ``reuse``, a command's side),
channel pumps (``session``) and the status/journal/ssh logic (``remote``).

Importing this package imports nothing: the CLI loads each module only when a command needs it.
"""
