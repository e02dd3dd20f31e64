# Test backends for trying out txlb: twistd -ny backend_server.tac
# Ports come from BACKEND_PORTS (default 8081,8082,8083), delays from
# BACKEND_DELAY_MS (e.g. 8083:10), reported loads from BACKEND_LOAD (e.g.
# 8083:0.9) and capacities from BACKEND_CAPACITY (e.g. 10, or 8083:4: that
# many requests at a time at the usual speed, slower past it).  With
# BACKEND_ETCD=http://127.0.0.1:2379 each port registers itself in etcd
# under a lease (BACKEND_ETCD_POOL, BACKEND_ETCD_WEIGHT, BACKEND_ETCD_TTL,
# BACKEND_ETCD_PREFIX); see txlb/testbackend.py.
import os
import sys

from twisted.application.service import Application

# twistd does not put the current directory on sys.path, so find txlb next to
# this file when running from a checkout that is not pip-installed.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from txlb.testbackend import (
    makeBackendService,
    portsFromEnvironment,
    registrationsFromEnvironment,
    resourceFromEnvironment,
)

try:
    ports = portsFromEnvironment()
    resource = resourceFromEnvironment(ports)
    registrations = registrationsFromEnvironment(ports)
except ValueError as e:
    # One line instead of twistd's traceback for a typo in BACKEND_PORTS.
    raise SystemExit(f"backend_server.tac: {e}") from None

application = Application("txlb-backends")
makeBackendService(ports, resource=resource).setServiceParent(application)
# Started after the ports listen, stopped (lease revoked) before they close.
if registrations is not None:
    registrations.setServiceParent(application)
