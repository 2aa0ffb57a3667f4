#!/bin/bash
# The image's HEALTHCHECK: GET /ready on the public listener from inside the container, with
# bash's /dev/tcp (the image has no curl). Healthy when the answer is 200: `ready`, or
# `degraded` on main of a split whose moved module has no instance in rotation (main still
# serves everything else). 503 (`not_ready`: a hosted module's database does not answer) or no
# answer is unhealthy. The port is the one of BANYAN_SERVER__ADDR (8080 by default).
set -euo pipefail
addr=${BANYAN_SERVER__ADDR:-0.0.0.0:8080}
port=${addr##*:}
exec 3<>"/dev/tcp/127.0.0.1/${port}"
printf 'GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
read -r -t 3 _ status _ <&3
[ "${status}" = 200 ]
