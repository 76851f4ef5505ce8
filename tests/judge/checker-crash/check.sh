#!/bin/sh
case "$(cat "$1")" in
    fail) echo "cannot read the answer" >&2; exit 3 ;;
    crash) kill -SEGV $$ ;;
    babble) echo "looks fine to me"; exit 0 ;;
    *) exit 0 ;;
esac
