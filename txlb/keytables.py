"""
Per-key state in bounded memory, private to one process or shared by a
C{--workers} supervisor and its workers: the token buckets of
C{--rate-limit} and of each route's C{rate-limit} (L{Buckets}) and the
connection counts of C{--max-client-conns} (L{ClientCounts}).

A limit is the whole txlb's, not each worker's, so the workers must share
these counts, whichever worker the kernel gives a connection to.  They live
in one memory region (L{Region}): a C{memfd} the supervisor makes before it
starts the workers and hands each of them as a file descriptor, which each
maps.  The pages are allocated as they are first written, so an unused
table costs nothing.

Each route with a C{rate-limit} has a bucket table of its own, as large as
C{--rate-limit-keys} says, so that keys flooding one route cannot push
another's (or the global limit's) buckets out.  Routes come and go with
reloads, which each worker makes on its own, so these tables are not laid
out at start: a directory in the region's first page gives each route's
limit (its L{identity<Region.claimTable>}) one of L{ROUTE_TABLES} slots,
and the region grows (C{ftruncate}) as slots are first used.  A worker that
claims a limit another has claimed finds it, and so uses its buckets; a
limit no longer claimed keeps its slot until a new one needs it (the one
claimed longest ago is taken, and emptied).

A table is set-associative, as a CPU cache is: a key's 64-bit fingerprint
(L{Region.fingerprint}) chooses one set of L{WAYS} fixed-size records, and
the key lives in one of them, or in none.  A table of N
records so never holds more than N keys, and needs no pointers: a worker
that dies in the middle of a write leaves at worst one garbled record,
never a broken structure.  Each reader checks what it reads (a garbled
bucket reads as a full one), and the supervisor clears a dead worker's
connection counts (L{ClientCounts.forgetWorker}).

Writers take an exclusive C{flock} on the region, each process on an open
file description of its own (a lock is the description's, so one inherited
from the supervisor would be shared with it).  The kernel releases it when
the process dies, so a worker SIGKILLed while it holds it wedges nobody; a
stopped one (SIGSTOP, a debugger) holds it until it runs again.  It is held
for a microsecond or two, with no I/O and nothing that can raise in
between; a POSIX record lock per set (C{lockf}) would let workers write
different sets at once, but costs twice as much (measured in
docs/overload.md) and the lock is seldom contended.  In one process (no
workers) the region is anonymous memory and there is no lock.

Why not have the supervisor hand out tokens in leases?  Every new key
(a client's first request) would wait for a round trip to the supervisor,
and a lease is spent by one worker only, so at most a lease per worker per
key can be spent beyond the limit; sharing the buckets costs two system
calls per request and spends nothing twice (measured in docs/overload.md).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import secrets
import struct
from collections.abc import Callable, Mapping

#: Records per set: a new key replaces the least recently used of its set's.
WAYS = 8

#: The slots of route tables in a region's directory: twice the routes a
#: configuration may give a rate limit (L{MAX_ROUTE_LIMITS}), so that a
#: reload changing every one of them never takes a slot the routes it
#: keeps still use.
ROUTE_TABLES = 128

#: The most routes with a C{rate-limit} one configuration may have.
MAX_ROUTE_LIMITS = ROUTE_TABLES // 2

#: The region's header: a magic number and format version, the
#: C{PYTHONHASHSEED} of the processes sharing it (empty if private), and
#: the number of records of each table.
_HEADER = struct.Struct("<8s16sQQI")
_MAGIC = b"txlbkt\x00\x03"

#: The directory of route tables, after the header in the first page: the
#: last claim's sequence number, then per slot the fingerprint of the
#: limit that has it (0: free) and the sequence number of its last claim.
_DIRECTORY = struct.Struct("<Q" + "QQ" * ROUTE_TABLES)
_DIRECTORY_OFFSET = 64

#: The bits of a fingerprint.
_MASK = 2**64 - 1

#: A bucket: the key's fingerprint (0 for an empty record), its tokens, and
#: when they were counted (also when the bucket was last used).
_BUCKET = struct.Struct("<Qdd")
_BUCKET_SET = struct.Struct("<" + "Qdd" * WAYS)

#: Tokens and stamps are taken as garbled past this many seconds in the
#: future (another process's clock read may be a little ahead; never this
#: much).
_FUTURE = 1.0


#: What counts as a whole token: a client sending at exactly the rate must
#: not be refused for a rounding error of the seconds it waited.
_ONE = 1.0 - 1e-9


def _align(size: int) -> int:
    return -(-size // mmap.PAGESIZE) * mmap.PAGESIZE


class Region:
    """
    The memory the tables live in, with their locks.

    @ivar fd: The C{memfd} shared with the workers, or C{None} when the
        region is private to this process.
    @ivar buckets: How many records L{Buckets} has.
    @ivar clients: How many records L{ClientCounts} has.
    @ivar workers: The workers L{ClientCounts} keeps a count for (1 when
        private).
    """

    def __init__(self, memory: mmap.mmap, fd: int | None, backing: int | None = None) -> None:
        """
        @param backing: The C{memfd} of a private region (C{fd} is C{None}
            then): route tables grow it.
        """
        self.memory = memory
        self.fd = fd
        self._backing = fd if backing is None else backing
        _, seed, self.buckets, self.clients, self.workers = _HEADER.unpack_from(memory, 0)
        self.hashSeed = seed.rstrip(b"\x00").decode("ascii") or None
        self.bucketsOffset = _align(_HEADER.size)
        self.clientsOffset = _align(self.bucketsOffset + self.buckets * _BUCKET.size)
        self.routeTablesOffset = self.size(self.buckets, self.clients, self.workers)
        self.tableBytes = _align(self.buckets * _BUCKET.size)
        self._tables: dict[int, mmap.mmap] = {}
        self._lockFd: int | None = None
        if fd is None:
            self.lock = self.unlock = _unlocked
        else:
            self._lockFd = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
            self.lock = self._lock
            self.unlock = self._unlock

    @staticmethod
    def size(buckets: int, clients: int, workers: int) -> int:
        """
        The bytes a region for these tables takes.
        """
        header = _align(_HEADER.size)
        return _align(header + buckets * _BUCKET.size) + _align(
            clients * ClientCounts.recordSize(workers)
        )

    @classmethod
    def create(cls, keys: int, workers: int = 1, hashSeed: str | None = None) -> Region:
        """
        A new region with room for C{keys} rate-limit buckets and C{keys}
        connected client addresses (each rounded up to whole sets).

        @param hashSeed: C{None} for a region private to this process; else
            it is a C{memfd} to share with C{workers} processes started
            with this C{PYTHONHASHSEED} (see L{workerHashSeed}).
        """
        records = max(WAYS, -(-keys // WAYS) * WAYS)
        size = cls.size(records, records, workers)
        # A memfd even when private: the route tables grow it.
        backing = os.memfd_create("txlb-keytables")
        os.ftruncate(backing, size)
        memory = mmap.mmap(backing, size)
        seed = (hashSeed or "").encode("ascii")
        _HEADER.pack_into(memory, 0, _MAGIC, seed, records, records, workers)
        if hashSeed is None:
            return cls(memory, None, backing)
        return cls(memory, backing)

    @classmethod
    def adopt(cls, fd: int, hashSeed: str | None) -> Region:
        """
        The region a supervisor made, from the file descriptor it passed.

        @param hashSeed: This process's C{PYTHONHASHSEED}.
        @raise ValueError: If C{fd} holds no region, or one whose
            fingerprints this process would not compute alike.
        """
        size = os.fstat(fd).st_size
        if size < _HEADER.size:
            raise ValueError(f"file descriptor {fd} holds no txlb key tables")
        memory = mmap.mmap(fd, _align(_HEADER.size))
        magic, seed, buckets, clients, workers = _HEADER.unpack_from(memory, 0)
        theirs = seed.rstrip(b"\x00").decode("ascii", "replace") or None
        if magic != _MAGIC or theirs != hashSeed:
            memory.close()
            if magic != _MAGIC:
                raise ValueError(f"file descriptor {fd} holds no txlb key tables")
            raise ValueError(f"PYTHONHASHSEED is {hashSeed!r}, not the key tables' {theirs!r}")
        memory.close()
        return cls(mmap.mmap(fd, cls.size(buckets, clients, workers)), fd)

    def fingerprint(self, key: bytes) -> int:
        """
        The 64-bit fingerprint of C{key}: Python's own C{hash}, SipHash keyed
        by the interpreter's random secret, the same in every process
        started with the region's C{PYTHONHASHSEED}.  Clients cannot
        predict which set their keys land in, nor make one key's fingerprint
        that of another they chose (2**64 tries); never 0, which marks an
        empty record.  Keyed BLAKE2b cost 0.9 us on CPython and 3 us on
        PyPy; this, 0.07 us and 0.01 us.
        """
        return hash(key) & _MASK or 1

    def _lock(self) -> None:
        fcntl.flock(self._lockFd, fcntl.LOCK_EX)  # type: ignore[arg-type]

    def _unlock(self) -> None:
        fcntl.flock(self._lockFd, fcntl.LOCK_UN)  # type: ignore[arg-type]

    def claimTable(self, identity: bytes) -> int:
        """
        The slot of the route table for the rate limit C{identity}: the one
        it has if any process claimed it already (its buckets are kept),
        else a free one, else the one claimed longest ago, emptied.  Each
        process claims its routes' limits at start and at each reload.

        @param identity: What makes a limit the same one: its route's label
            and the limit's rate, burst and key.
        """
        fingerprint = self.fingerprint(b"route-table\x00" + identity)
        memory = self.memory
        self.lock()
        try:
            directory = _DIRECTORY.unpack_from(memory, _DIRECTORY_OFFSET)
            sequence = directory[0] + 1
            owners, claims = directory[1::2], directory[2::2]
            fresh = fingerprint not in owners
            if not fresh:
                slot = owners.index(fingerprint)
            elif 0 in owners:
                slot = owners.index(0)
            else:
                slot = claims.index(min(claims))
            table = self.table(slot)
            if fresh:
                # Another limit's buckets, or none: free the pages (the
                # table reads as zeros, every record empty, in every
                # process).
                table.madvise(mmap.MADV_REMOVE)
            struct.pack_into("<Q", memory, _DIRECTORY_OFFSET, sequence)
            struct.pack_into(
                "<QQ", memory, _DIRECTORY_OFFSET + 8 + 16 * slot, fingerprint, sequence
            )
        finally:
            self.unlock()
        return slot

    def table(self, slot: int) -> mmap.mmap:
        """
        The memory of route table C{slot}, mapped once per process; the
        region grows to hold it if it is the first time any process uses
        it.
        """
        table = self._tables.get(slot)
        if table is None:
            backing = self._backing
            assert backing is not None
            offset = self.routeTablesOffset + slot * self.tableBytes
            if os.fstat(backing).st_size < offset + self.tableBytes:
                os.ftruncate(backing, offset + self.tableBytes)
            table = self._tables[slot] = mmap.mmap(backing, self.tableBytes, offset=offset)
        return table

    def close(self) -> None:
        """
        Unmap the region (and close its file descriptor, if it has one).
        """
        self.memory.close()
        for table in self._tables.values():
            table.close()
        self._tables.clear()
        for fd in {self._backing, self._lockFd}:
            if fd is not None:
                os.close(fd)
        self.fd = self._backing = self._lockFd = None


def workerHashSeed(environ: Mapping[str, str]) -> str:
    """
    The C{PYTHONHASHSEED} for workers that share a region: the one this
    process was given, if it is a number, else a random one.
    """
    seed = environ.get("PYTHONHASHSEED", "")
    if seed.isascii() and seed.isdigit():
        return seed
    return str(1 + secrets.randbelow(2**32 - 1))


def _unlocked() -> None:
    """
    No lock: the region is this process's alone.
    """


class Buckets:
    """
    Token buckets, one per key, in a region's table (its own, or a route
    table): at most C{region.buckets} of them, a new key taking the place
    of the least recently used of its set.
    """

    def __init__(self, region: Region, now: Callable[[], float], slot: int | None = None) -> None:
        """
        @param now: The clock, in seconds.  Every process sharing the region
            must read the same one (C{time.monotonic} is the same in every
            process on Linux).
        @param slot: The route table (L{Region.claimTable}), or C{None} for
            the region's own (C{--rate-limit}'s).
        """
        self._region = region
        if slot is None:
            self._memory, self._offset = region.memory, region.bucketsOffset
        else:
            self._memory, self._offset = region.table(slot), 0
        self._sets = region.buckets // WAYS
        self._now = now

    def take(self, fingerprint: int, rate: float, burst: float) -> float:
        """
        Take a token from the bucket of C{fingerprint}, which holds at most
        C{burst} tokens and gains C{rate} of them a second; a key not seen
        (or no longer remembered) starts full.

        @return: 0 if a token was taken, else the seconds until there is
            one.
        """
        base = self._offset + (fingerprint % self._sets) * _BUCKET_SET.size
        region = self._region
        memory = self._memory
        region.lock()
        try:
            now = self._now()
            values = _BUCKET_SET.unpack_from(memory, base)
            fingerprints = values[0::3]
            if fingerprint in fingerprints:
                way = fingerprints.index(fingerprint)
                tokens, stamp = values[3 * way + 1], values[3 * way + 2]
                if 0.0 <= tokens and stamp <= now + _FUTURE:
                    if now > stamp:
                        tokens += (now - stamp) * rate
                    else:
                        now = stamp
                    if tokens > burst:
                        tokens = burst
                else:
                    # Garbled (a writer died mid-write): start afresh.
                    tokens = burst
            else:
                if 0 in fingerprints:
                    way = fingerprints.index(0)
                else:
                    stamps = values[2::3]
                    way = stamps.index(min(stamps))
                tokens = burst
            if tokens >= _ONE:
                tokens = tokens - 1.0 if tokens > 1.0 else 0.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / rate
            _BUCKET.pack_into(memory, base + way * _BUCKET.size, fingerprint, tokens, now)
        finally:
            region.unlock()
        return wait

    def __len__(self) -> int:
        """
        How many keys have a bucket (for tests and the status page; reads
        the whole table, without locks).
        """
        memory, offset = self._memory, self._offset
        size = _BUCKET.size
        return sum(
            1
            for index in range(self._sets * WAYS)
            if _BUCKET.unpack_from(memory, offset + index * size)[0]
        )


class ClientCounts:
    """
    The connections each client address has open, counted per worker, in a
    region: at most C{region.clients} addresses with connections open.
    An address whose connections are all closed leaves its record free.

    Each worker counts in a column of its own, and only it writes there:
    when a worker dies, its connections die with it, and the supervisor
    clears its column (L{forgetWorker}) before its successor starts.
    """

    def __init__(self, region: Region, worker: int = 0) -> None:
        self._region = region
        self._memory = region.memory
        self._offset = region.clientsOffset
        self._sets = region.clients // WAYS
        workers = region.workers
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} of {workers}")
        self._worker = worker
        self._stride = 1 + workers
        self._record = struct.Struct("<Q" + "I" * workers + self._padding(workers))
        self._set = struct.Struct("<" + ("Q" + "I" * workers + self._padding(workers)) * WAYS)

    @staticmethod
    def _padding(workers: int) -> str:
        return "4x" if workers % 2 else ""

    @staticmethod
    def recordSize(workers: int) -> int:
        """
        The bytes of one address's record with C{workers} columns.
        """
        return 8 + 4 * (workers + workers % 2)

    def opened(self, fingerprint: int, limit: int) -> bool | None:
        """
        A connection from the address of C{fingerprint} was accepted: count
        it if the address has fewer than C{limit} open in all workers.

        @return: C{True} if it was counted, C{False} if the address is at
            its limit (the connection must be closed, and not reported as
            closed), C{None} if there was no room to count it (the table is
            full: it may stay, uncounted, and must not be reported as
            closed).
        """
        base = self._offset + (fingerprint % self._sets) * self._set.size
        region = self._region
        region.lock()
        try:
            values = list(self._set.unpack_from(self._memory, base))
            stride = self._stride
            fingerprints = values[0::stride]
            if fingerprint in fingerprints:
                way = fingerprints.index(fingerprint)
            else:
                for way in range(WAYS):
                    start = way * stride + 1
                    if not any(values[start : start + stride - 1]):
                        break
                else:
                    return None
                values[way * stride : (way + 1) * stride] = [fingerprint] + [0] * (stride - 1)
            start = way * stride
            if sum(values[start + 1 : start + stride]) >= limit:
                return False
            values[start + 1 + self._worker] += 1
            self._record.pack_into(
                self._memory,
                base + way * self._record.size,
                *values[start : start + stride],
            )
            return True
        finally:
            region.unlock()

    def closed(self, fingerprint: int) -> None:
        """
        A connection L{opened} counted is closed.
        """
        base = self._offset + (fingerprint % self._sets) * self._set.size
        region = self._region
        region.lock()
        try:
            values = self._set.unpack_from(self._memory, base)
            stride = self._stride
            fingerprints = values[0::stride]
            if fingerprint not in fingerprints:
                return
            way = fingerprints.index(fingerprint)
            column = way * stride + 1 + self._worker
            if values[column]:
                self._record.pack_into(
                    self._memory,
                    base + way * self._record.size,
                    *values[way * stride : column],
                    values[column] - 1,
                    *values[column + 1 : (way + 1) * stride],
                )
        finally:
            region.unlock()

    def count(self, fingerprint: int) -> int:
        """
        The connections the address of C{fingerprint} has open in all
        workers.
        """
        base = self._offset + (fingerprint % self._sets) * self._set.size
        values = self._set.unpack_from(self._memory, base)
        stride = self._stride
        fingerprints = values[0::stride]
        if fingerprint not in fingerprints:
            return 0
        start = fingerprints.index(fingerprint) * stride
        return sum(values[start + 1 : start + stride])

    def forgetWorker(self, worker: int) -> None:
        """
        Worker C{worker} is gone, and its connections with it: clear its
        counts.
        """
        column = 8 + 4 * worker
        size = self._set.size
        record = self._record.size
        zero = bytes(4)
        region = self._region
        for index in range(self._sets):
            base = self._offset + index * size
            region.lock()
            try:
                for way in range(WAYS):
                    start = base + way * record + column
                    self._memory[start : start + 4] = zero
            finally:
                region.unlock()
