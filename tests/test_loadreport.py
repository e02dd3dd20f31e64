"""
Reading a backend's load header.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txlb.loadreport import parseLoad


class ParseLoadTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        A bare number is the load, capped at 1; a dictionary's load is its
        largest member, C{queue=N} counting as N / (N + 1); anything else is
        no report.
        """
        table = [
            (b"0", 0.0),
            (b"0.72", 0.72),
            (b" 0.5 ", 0.5),
            (b"1", 1.0),
            (b"3.5", 1.0),
            (b"cpu=0.72", 0.72),
            (b"cpu=0.72, mem=0.9", 0.9),
            (b"cpu=0.72, queue=12", 12 / 13),
            (b"queue=0", 0.0),
            (b"queue=1, cpu=0.2", 0.5),
            (b"cpu=0.3;w=2, mem=7", 1.0),
            (b"cpu=0.3, ready, name=x", 0.3),
            (b"", None),
            (b"-0.5", None),
            (b"nan", None),
            (b"inf", None),
            (b"busy", None),
            (b"cpu=high", None),
            (b"cpu=-1", None),
        ]
        for value, load in table:
            self.assertEqual(parseLoad(value), load, value)
