#!/usr/bin/env bash
# Create a VPC, a tag, two droplets and a load balancer, each at most once:
# every POST runs under `once`, keyed by the resource, and its output (the
# resource's id) is the key's result.  A re-run, or a concurrent one
# (--wait), prints the stored ids and POSTs nothing.
#
#   create.sh WORKFLOW_DIR API_URL
set -euo pipefail
wf=$1 api=$2

post() {	# KEY KIND DATA: the id of the resource, created at most once
	once --wait "$wf" "$1" -- curl -fsS -X POST "$api/$2" -d "$3" 2>/dev/null
}

vpc=$(post vpc vpcs "name=main")
tag=$(post tag tags "resource=$vpc&env=prod")
d1=$(post droplet-1 droplets "vpc=$vpc&name=web-1")
d2=$(post droplet-2 droplets "vpc=$vpc&name=web-2")
lb=$(post lb load_balancers "vpc=$vpc&targets=$d1,$d2")
echo "vpc=$vpc tag=$tag droplets=$d1,$d2 lb=$lb"
