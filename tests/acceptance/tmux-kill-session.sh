#!/usr/bin/env bash
# Issue 14's exit acceptance: `dhtscope replay recordings/no-accept` in tmux, then
# `tmux kill-session`: no process it started may remain 3 s later. TRIES times (default 20).
# Run from the repository root: tests/acceptance/tmux-kill-session.sh [TRIES]
set -u
TRIES=${1:-20}
DHTSCOPE=${DHTSCOPE:-.venv/bin/dhtscope}
RECORDING=${RECORDING:-recordings/no-accept}
SOCKET=dhtscope-exit-$$
passed=0

descendants() {  # every process under $1, one pid a line
    local child
    for child in $(pgrep -P "$1"); do echo "$child"; descendants "$child"; done
}

for i in $(seq 1 "$TRIES"); do
    tmux -L "$SOCKET" new-session -d -s exit -x 120 -y 40 "$DHTSCOPE replay $RECORDING"
    sleep 2  # the first screen is up and the replay's workers are running
    pane=$(tmux -L "$SOCKET" list-panes -t exit -F '#{pane_pid}')
    pids="$pane $(descendants "$pane" | tr '\n' ' ')"
    tmux -L "$SOCKET" kill-session -t exit
    sleep 3
    left=""
    for pid in $pids; do
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
        [ -n "$state" ] && [ "$state" != Z ] && left="$left $pid"
    done
    if [ -z "$left" ]; then
        passed=$((passed + 1))
        echo "try $i: all $(echo $pids | wc -w) processes gone"
    else
        echo "try $i: still running after 3 s:$left"
        kill -9 $left 2>/dev/null
    fi
done
tmux -L "$SOCKET" kill-server 2>/dev/null
echo "$passed of $TRIES tries: no dhtscope process left 3 s after tmux kill-session"
[ "$passed" -eq "$TRIES" ]
