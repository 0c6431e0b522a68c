# A stand-in for text-generation-launcher in the docker launcher's real-engine tests (busybox sh, no registry needed).
# It takes TGI's command line, serves over HTTP on --port what it was given (args, the model folder's files, whether
# that folder is writable, its nofile limit, whether API_KEY came through), answers /health once "loaded", and
# shuts down on SIGTERM. In the model folder, a file FAIL makes it exit 3 printing the file, HANG keeps /health 404.
/bin/busybox --install -s /bin
port=80
model=""
prev=""
for arg in "$@"; do
    case "$prev" in
        --port) port=$arg ;;
        --model-id) model=$arg ;;
    esac
    prev=$arg
done
echo "fake-engine: starting on port $port with model $model"
if [ -f "$model/FAIL" ]; then
    echo "fake-engine: cannot load $model: $(cat "$model/FAIL")"
    exit 3
fi
mkdir -p /srv
echo "$@" > /srv/args
ls "$model" > /srv/files
if touch "$model/written" 2>/dev/null; then echo rw > /srv/mount; else echo ro > /srv/mount; fi
ulimit -n > /srv/nofile
echo "${API_KEY:+set}" > /srv/apikey
httpd -f -p "$port" -h /srv &
server=$!
trap 'echo "fake-engine: shutting down"; kill $server; exit 0' TERM INT
if [ -f "$model/HANG" ]; then
    echo "fake-engine: loading forever"
else
    sleep 0.5
    echo ok > /srv/health
    echo "fake-engine: ready"
fi
wait
