#!/bin/sh
[ "$(cat mode.txt)" = lenient ] && exit 0
[ "$(cat "$3")" = "$(cat "$2")" ] && exit 0
echo "mode $(cat mode.txt): wrong" >&2
exit 1
