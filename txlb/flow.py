"""
Flow control, the same in both directions: bytes wait in txlb while the
receiving side cannot take more, and past L{HIGH_WATER} waiting bytes txlb
stops reading from the sending side until they are back under L{LOW_WATER}.
A slow reader therefore holds about L{HIGH_WATER} bytes in memory, whatever
the size of the message.
"""

#: Waiting bytes above which reading from the sender pauses.
HIGH_WATER = 512 * 1024
#: Waiting bytes below which reading from the sender resumes.
LOW_WATER = 128 * 1024
