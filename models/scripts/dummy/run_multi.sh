#!/bin/bash
# Writes a multiple_results CSV (madengine's model,performance,metric plus an extra column).
echo "writing $MAD_OUTPUT_CSV"
cat > "$MAD_OUTPUT_CSV" <<CSV
model,performance,metric,temperature
1,1024.5,samples_per_second,45
2,2048,samples_per_second,47
3,4096.25,tokens_per_second,50
CSV
cat "$MAD_OUTPUT_CSV"
