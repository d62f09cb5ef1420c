# Sourced by the benchmark scripts: `run CMD...` echoes the command and its output into "$out/log.txt" and
# records a failing exit status in $status (the scripts go on with the next network and exit with it at the end).
export PYTHONUNBUFFERED=1
status=0
run() { echo "+ $*" | tee -a "$out/log.txt"; "$@" 2>&1 | tee -a "$out/log.txt"; local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || status=$rc; }
