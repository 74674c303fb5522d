#!/usr/bin/env python3
"""The same as create.sh, with the oncefs module: each POST under a claim
of its own key, whose result is the resource's id.

    create.py WORKFLOW_DIR API_URL
"""
import os
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "python"))
import oncefs  # noqa: E402


def post(wf, key, api, kind, data):
    """The id of the resource, created at most once across re-runs."""
    while True:
        try:
            with wf.claim(key) as c:
                with urllib.request.urlopen(api + "/" + kind, data=data.encode()) as r:
                    c.result = r.read()
                return c.result.decode()
        except oncefs.AlreadyDone as done:
            return done.result.decode()
        except oncefs.InFlight:
            wf.wait(key)            # a concurrent run is creating it


def main():
    wf = oncefs.Workflow(sys.argv[1], create=True)
    api = sys.argv[2]
    vpc = post(wf, "vpc", api, "vpcs", "name=main")
    tag = post(wf, "tag", api, "tags", "resource=%s&env=prod" % vpc)
    d1 = post(wf, "droplet-1", api, "droplets", "vpc=%s&name=web-1" % vpc)
    d2 = post(wf, "droplet-2", api, "droplets", "vpc=%s&name=web-2" % vpc)
    lb = post(wf, "lb", api, "load_balancers", "vpc=%s&targets=%s,%s" % (vpc, d1, d2))
    print("vpc=%s tag=%s droplets=%s,%s lb=%s" % (vpc, tag, d1, d2, lb))


if __name__ == "__main__":
    main()
