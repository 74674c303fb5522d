#!/usr/bin/env python3
"""A queue that re-delivers (the rocky request): every message arrives
three times, to several consumer processes at once, and each message is
processed exactly once.

    examples/redelivering-queue.py WORKFLOW_DIR [MESSAGES] [CONSUMERS]

A consumer claims the message's id as a key before its side effect (here:
a line appended to a ledger file, the stand-in for a charge or an email)
and finalizes it with the result.  A duplicate finds the key succeeded
(skipped_succeeded) or still held by the consumer working on it
(skipped_in_flight).  At the end it prints the counts and checks the
ledger: one line per message.
"""
import multiprocessing
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "python"))
import oncefs  # noqa: E402

DELIVERIES = 3


def consume(wf_path, queue, ledger, counts):
    wf = oncefs.Workflow(wf_path)
    mine = {"processed": 0, "skipped_succeeded": 0, "skipped_in_flight": 0}
    while True:
        msg = queue.get()
        if msg is None:
            break
        try:
            with wf.claim("msg-%s" % msg["id"]) as c:
                time.sleep(random.uniform(0, 0.003))        # the work
                with open(ledger, "a") as f:                 # the side effect
                    f.write("%s %d\n" % (msg["id"], os.getpid()))
                c.result = "charged %s" % msg["amount"]
            mine["processed"] += 1
        except oncefs.AlreadyDone:
            mine["skipped_succeeded"] += 1
        except oncefs.InFlight:
            mine["skipped_in_flight"] += 1
    counts.put(mine)


def main():
    wf_path = sys.argv[1]
    messages = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    consumers = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    oncefs.Workflow(wf_path, create=True)
    ledger = tempfile.NamedTemporaryFile(prefix="ledger-", delete=False).name
    deliveries = [{"id": "%05d" % i, "amount": i} for i in range(messages)] * DELIVERIES
    random.Random(7).shuffle(deliveries)
    queue, counts = multiprocessing.Queue(), multiprocessing.Queue()
    for d in deliveries:
        queue.put(d)
    for _ in range(consumers):
        queue.put(None)
    procs = [multiprocessing.Process(target=consume, args=(wf_path, queue, ledger, counts))
             for _ in range(consumers)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    total = {"processed": 0, "skipped_succeeded": 0, "skipped_in_flight": 0}
    for _ in procs:
        for k, v in counts.get().items():
            total[k] += v
    for p in procs:
        p.join()
    took = time.monotonic() - t0
    with open(ledger) as f:
        lines = f.read().split("\n")[:-1]
    os.unlink(ledger)
    ids = [line.split()[0] for line in lines]
    print("%d messages, %d deliveries, %d consumers, %.2f s" % (messages, len(deliveries), consumers, took))
    print("processed: %(processed)d, skipped_succeeded: %(skipped_succeeded)d, "
          "skipped_in_flight: %(skipped_in_flight)d" % total)
    print("side effects: %d, distinct messages: %d" % (len(ids), len(set(ids))))
    if len(ids) != messages or len(set(ids)) != messages:
        print("a message was processed twice, or not at all")
        sys.exit(1)


if __name__ == "__main__":
    main()
