#!/bin/sh
# restore_command for a cluster fed by reprieve: walfetch.sh NAME PATH INBOX MODE
#
# Runs as the database's OS user, once per WAL file recovery asks for, so it
# is POSIX sh: a few milliseconds to start where an interpreter takes tens.
# INBOX belongs to reprieve, INBOX/ready and INBOX/requests to us (see
# pg_feeder.py).
#
# restore: a file already in INBOX/ready (prefetched) is moved at once: a
# rename, where a copy would cost a 16 MiB write per segment.
# Otherwise (and always for a standby, whose newest segment keeps growing)
# ask with requests/NAME.want and wait until the feeder removes it: then
# INBOX/ready/NAME is the answer, or INBOX/NAME.none says the vault has no such
# file (exit 1: "not there", which ends a restore's replay and makes a
# standby try again a second later). If the feeder stops answering, a
# restore exits 126, which makes PostgreSQL stop rather than end recovery
# early as if the WAL had run out; a standby exits 1 and keeps waiting.
name=$1
dest=$2
inbox=$3
mode=$4
src="$inbox/ready/$name"
want="$inbox/requests/$name.want"
asked="$inbox/requests/$name.asked"

deliver() {
    mv -f "$src" "$dest" || exit 1
    : > "$inbox/requests/$name.got"  # progress: the feeder prefetches past it
    exit 0
}

stalled() {
    rm -f "$want" "$asked"
    [ "$mode" = standby ] && exit 1
    echo "reprieve: the WAL feeder for $inbox stopped answering" >&2
    exit 126
}

[ "$mode" = restore ] && [ -f "$src" ] && deliver
: > "$asked"
: > "$want"
tries=0
while [ -f "$want" ]; do
    tries=$((tries + 1))
    if [ $((tries % 500)) -eq 0 ]; then
        # About every 5 s: the feeder touches its file every second.
        [ "$inbox/feeder.alive" -nt "$asked" ] || stalled
        : > "$asked"
    fi
    [ "$tries" -lt 60000 ] || stalled
    sleep 0.01
done
rm -f "$asked"
[ -f "$src" ] && deliver
exit 1
