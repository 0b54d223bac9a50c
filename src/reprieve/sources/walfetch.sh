#!/bin/sh
# restore_command for a cluster fed by reprieve: walfetch.sh NAME PATH INBOX
#
# Runs as the database's OS user, once per WAL file recovery asks for, so it
# is POSIX sh: a few milliseconds to start where an interpreter takes tens.
# If INBOX/NAME is there (prefetched), copy it to PATH. Otherwise ask with
# INBOX/NAME.want and wait for the feeder's answer: the file, or NAME.none
# (the vault has no such file: exit 1). A feeder that stopped touching
# INBOX/feeder.alive also means exit 1.
name=$1
dest=$2
inbox=$3
src="$inbox/$name"

deliver() {
    cp "$src" "$dest.reprieve-tmp" && mv "$dest.reprieve-tmp" "$dest" || exit 1
    case "$name" in
        *.history) ;;
        *) rm -f "$src" ;;
    esac
    exit 0
}

[ -f "$src" ] && deliver
: > "$src.want"
: > "$src.asked"
tries=0
while [ "$tries" -lt 60000 ]; do
    [ -f "$src" ] && { rm -f "$src.asked"; deliver; }
    if [ -f "$src.none" ]; then
        rm -f "$src.none" "$src.asked"
        exit 1
    fi
    tries=$((tries + 1))
    if [ $((tries % 500)) -eq 0 ]; then
        # About every 5 s: the feeder touches its file every second.
        [ "$inbox/feeder.alive" -nt "$src.asked" ] || { rm -f "$src.asked"; exit 1; }
        : > "$src.asked"
    fi
    sleep 0.01
done
rm -f "$src.asked"
exit 1
