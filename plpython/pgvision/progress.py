"""Progress NOTICEs for long work that do not flood the client: at most one every few
seconds, and always the last one.

A psql session extracting 1,500 images in 32-row batches used to get 47 lines in 10 s; a
report that is due less than ``every`` seconds after the previous one is held back, and the
latest held-back one is said by :meth:`Progress.finish`, so the end is always reported.

>>> said = []
>>> clock = iter([0.0, 1.0, 2.0, 6.0, 7.0]).__next__
>>> progress = Progress(said.append, every=5.0, clock=clock)
>>> for step in (1, 2, 3, 4):
...     progress.report(f"{step}/4")
>>> progress.finish()
>>> said
['3/4', '4/4']
"""

import time

EVERY_SECONDS = 5.0


class Progress:
    """Say ``report(message)`` through ``notice`` at most once every ``every`` seconds."""

    def __init__(self, notice, every=EVERY_SECONDS, clock=time.monotonic):
        self.notice, self.every, self.clock = notice, every, clock
        self.last = clock()
        self.held = None

    def report(self, message):
        now = self.clock()
        if now - self.last >= self.every:
            self.notice(message)
            self.last, self.held = now, None
        else:
            self.held = message

    def finish(self):
        """Say the last report if it was held back."""
        if self.held is not None:
            self.notice(self.held)
            self.held = None
