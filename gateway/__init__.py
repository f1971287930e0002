"""feedgate's media plane and servers.

Importing the package installs credential redaction for every log record of the process
(:mod:`gateway.redaction`): every entry point, worker, CLI command and test runs through here,
so no token, password or cookie reaches a log line whichever module logs it.
"""

from gateway.redaction import install as _install_redaction

_install_redaction()
