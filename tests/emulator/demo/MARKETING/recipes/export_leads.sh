#!/bin/bash
# Push the scored leads to the CRM drop folder.
set -euo pipefail
OUT="/mnt/crm_drop/leads_$(date +%Y%m%d).csv"
cat "$DKU_INPUT_0_FILES"/*.csv > "$OUT"
echo "exported $(wc -l < "$OUT") lines to $OUT"
