#!/usr/bin/env bash
# Debian packages the test suite needs: influxd (InfluxDB 1.6.7), mbpoll, node/npm (the
# node-opcua interop test), chromium (the dashboard's browser test), prometheus (2.42, with
# promtool: tests/test_prometheus.py), prometheus-alertmanager (0.25: tests/test_alertmanager.py)
# and poppler-utils (pdftotext: tests/test_report_pdf.py).
# Installs only what is missing; needs root (as on CI) or sudo.
set -euo pipefail
need=()
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v mbpoll >/dev/null 2>&1 || need+=(mbpoll)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v pdftotext >/dev/null 2>&1 || need+=(poppler-utils)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
