# Pre-spawned bash runner: says ready on fd 4, waits for the go on fd 3 (mode and arguments,
# NUL-separated), closes both,
# then becomes `bash main.sh ARGS` (a bash start is about a millisecond; the wait costs nothing).
printf R >&4
mapfile -d '' -t fields <&3
exec 3<&- 4>&-
exec /bin/bash /tmp/main.sh "${fields[@]:1}"
