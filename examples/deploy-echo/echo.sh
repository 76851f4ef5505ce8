#!/bin/sh
# A CGI/1.1 response (RFC 3875): header lines, a blank line, the body.
printf 'Status: 200 OK\n'
printf 'Content-Type: text/plain; charset=utf-8\n'
printf 'X-Greeting: %s\n' "$GREETING"
printf '\n'
printf '%s %s?%s\n' "$REQUEST_METHOD" "$PATH_INFO" "$QUERY_STRING"
cat
