#!/bin/bash
# Written for pytest-madengine: rpd's tracer must be in the image (rocmProfileData installs runTracer.sh).
command -v runTracer.sh >/dev/null || { echo "rpd: runTracer.sh is not in the image (install rocmProfileData)" >&2; exit 1; }
