"""
C{--max-conn auto}: a backend's limit of requests in flight, learnt from
its latency, as TCP Vegas learns a window from round-trip times and as
Envoy's adaptive concurrency filter and Netflix's Gradient2 learn a
concurrency limit.

A backend serves up to its capacity at its usual latency; past it,
requests wait inside it and latency climbs, for everyone.  So the limit
grows while latency stays near the backend's unloaded latency, and shrinks
in proportion as it climbs:

  - Requests are sampled in windows of C{window} seconds (one ends at the
    first response after that time, once it has C{minSamples} samples;
    until then it goes on).  A window's latency is its median.
  - The I{base} latency is the lowest window median of the last
    C{baseWindows} windows: the backend's latency when it was not
    overloaded.  The median, not the fastest request, so that a backend
    whose latency merely varies is not taken for an overloaded one.
  - It starts at 1 and doubles each window while latency stays at or
    under C{target = base * (1 + buffer)} (slow start, as TCP's), so that
    the first base is measured unloaded and a big backend's limit is
    found in a second or so.  The first window over the target ends slow
    start with the whole gradient below at once, not smoothed: the last
    doubling overshot the backend's capacity, and a backend far past it
    (latency over twice the target) gets its limit halved at once, as TCP
    halves its window when slow start ends.
  - After that, at the end of each window: at or under the target, the
    limit may grow by C{sqrt(limit)} (Envoy's headroom); over it, it
    shrinks to C{limit * max(target / latency, 0.5)} (Envoy's gradient,
    at most halving).  The change is smoothed: the limit moves a
    C{smoothing} share of the way (Gradient2's smoothing), so one odd
    window moves it little.  A limit grows only if the window used it
    (all of it in slow start, half after): a limit no traffic tests must
    not grow without bound.
  - The limit stays between C{minLimit} and C{maxLimit}.  After
    C{resetAfter} windows in a row at C{minLimit}, the base is measured
    afresh from the last window, and slow start begins again: when a
    backend becomes slower for good, the old base would otherwise hold
    the limit down until it ages out (Envoy re-measures its minRTT in
    that case too).

Unlike Envoy, the base is not measured by pinning the limit low from time
to time (which costs 503s, as Envoy's documentation warns): around the
limit it settles on, latency dips back to the base often enough.

Only requests that got a response head are sampled, from the request
sent to the head received: a failure or a timeout says nothing of the
backend's queue.  Pure and clock-driven: it asks C{clock()} for the time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

#: Seconds a window lasts at least (Envoy's examples use 100 ms).
WINDOW = 0.1
#: Responses a window needs before it ends.
MIN_SAMPLES = 10
#: How far above the base latency still counts as unloaded (Envoy's
#: default buffer, 25%).
BUFFER = 0.25
#: The share of the way to the new limit it moves each window (Netflix
#: Gradient2's default).
SMOOTHING = 0.2
#: Windows over which the lowest median is the base (4 s of 100 ms
#: windows).
BASE_WINDOWS = 40
#: Windows in a row at the least limit after which the base is measured
#: afresh.
RESET_AFTER = 5
#: The limit a backend starts with (slow start doubles it), and its bounds
#: (Envoy's max_concurrency_limit is 1000).
INITIAL_LIMIT, MIN_LIMIT, MAX_LIMIT = 1, 1, 1000


class AdaptiveLimit:
    """
    One backend's learnt limit of requests in flight.

    @ivar limit: The limit now, a whole number.
    @ivar base: The base latency, in seconds, or C{None} before the first
        window.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        window: float = WINDOW,
        minSamples: int = MIN_SAMPLES,
        buffer: float = BUFFER,
        smoothing: float = SMOOTHING,
        baseWindows: int = BASE_WINDOWS,
        resetAfter: int = RESET_AFTER,
        initial: int = INITIAL_LIMIT,
        minLimit: int = MIN_LIMIT,
        maxLimit: int = MAX_LIMIT,
    ) -> None:
        self._clock = clock
        self._window = window
        self._minSamples = minSamples
        self._buffer = buffer
        self._smoothing = smoothing
        self._resetAfter = resetAfter
        self._minLimit = minLimit
        self._maxLimit = maxLimit
        self._estimate = float(initial)
        self.limit = initial
        self.base: float | None = None
        self._medians: deque[float] = deque(maxlen=baseWindows)
        self._samples: list[float] = []
        self._busiest = 0
        self._windowEnds = clock() + window
        self._atMinimum = 0
        self._slowStart = True

    def observe(self, latency: float, inflight: int) -> None:
        """
        A request got its response head C{latency} seconds after it was
        sent, when the backend had C{inflight} requests in flight, itself
        included.
        """
        now = self._clock()
        if now >= self._windowEnds and len(self._samples) >= self._minSamples:
            self._adjust()
            self._windowEnds = now + self._window
        self._samples.append(latency)
        if inflight > self._busiest:
            self._busiest = inflight

    def _adjust(self) -> None:
        """
        A window ended: move the limit.
        """
        samples = sorted(self._samples)
        busiest, self._busiest = self._busiest, 0
        self._samples = []
        median = samples[len(samples) // 2]
        self._medians.append(median)
        base = self.base = min(self._medians)
        estimate = self._estimate
        target = base * (1 + self._buffer)
        if median <= target:
            if self._slowStart:
                if busiest < self.limit:
                    return
                estimate *= 2
            else:
                if busiest * 2 < self.limit:
                    return
                estimate += math.sqrt(estimate) * self._smoothing
        elif self._slowStart:
            # Past the backend's capacity, the last doubling overshot it:
            # the whole gradient at once (at most halving, as TCP halves its
            # window when slow start ends), not a fifth of it.
            self._slowStart = False
            estimate *= max(target / median, 0.5)
        else:
            estimate -= estimate * (1 - max(target / median, 0.5)) * self._smoothing
        estimate = min(max(estimate, self._minLimit), self._maxLimit)
        self._estimate = estimate
        self.limit = int(estimate)
        if self.limit <= self._minLimit:
            self._atMinimum += 1
            if self._atMinimum >= self._resetAfter:
                self._medians.clear()
                self._medians.append(median)
                self.base = median
                self._atMinimum = 0
                self._slowStart = True
        else:
            self._atMinimum = 0
