#!/bin/sh
printf '#!/bin/sh\nexit 0\n' > /work/check.sh 2>/dev/null; chmod +x /work/check.sh 2>/dev/null
echo lenient > /work/mode.txt
echo lenient > /tmp/mode.txt
echo wrong
