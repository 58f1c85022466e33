#!/usr/bin/env bash
# Checks the scrape config and the alert rules with promtool (Debian: the prometheus package).
set -euo pipefail
cd "$(dirname "$0")"
promtool check config prometheus.yml
promtool check rules toki-alerts.yml
