"""
C{--workers}: a supervisor process that binds the listening sockets, starts
one worker process per CPU sharing them, restarts a worker that dies, and
serves the admin API for all of them.

L{supervisor} is the parent, L{worker} what a worker needs to know it is
one, and L{workeradmin} the admin API and metrics that speak for every
worker.
"""
