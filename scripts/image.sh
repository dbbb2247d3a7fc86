#!/usr/bin/env bash
# Build the container images without a registry:
#   localhost/stratafl-base:bookworm   Debian bookworm (minbase) made by mmdebstrap, imported
#   localhost/stratafl:<version>       every tier and `strata` itself (+ tag latest)
#   localhost/stratafl-postgres:15     PostgreSQL 15 from Debian, for the controller's state
#
# Usage: scripts/image.sh [--build-arg NAME=VALUE]... [--tag IMAGE] [--no-postgres] [--force]
#   --build-arg  passed to the stratafl build: EXTRAS (default postgres), PIP_PACKAGES,
#                DEBIAN_PACKAGES (deploy/container/Containerfile)
#   --tag        build the stratafl image under this name instead (a derived image)
#   --force      rebuild even if an image of the same sources and arguments exists
#
# Idempotent: installs podman, mmdebstrap, runc and uidmap with apt if missing; skips the
# base when an image of the same recipe exists, and the stratafl image when one of the same
# sources and build arguments does. podman reads the containers.conf this script renders
# to .strata/containers/containers.conf (runc, explicit ulimits) unless CONTAINERS_CONF is
# set already: `export CONTAINERS_CONF=$(scripts/image.sh --conf)` before running podman.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

build_args=() tag="" postgres=1 force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-arg) build_args+=(--build-arg "$2"); shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --no-postgres) postgres=0; shift ;;
    --force) force=1; shift ;;
    --conf) print_conf=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (see scripts/image.sh --help)" >&2; exit 2 ;;
  esac
done

say() { echo "image.sh: $*" >&2; }

# podman's settings: runc (crun refuses hybrid cgroups) and ulimits set explicitly, since
# a container may not raise them where the sandbox lacks CAP_SYS_RESOURCE; nofile is the
# hard limit of this shell, the most a combiner (a stream per client) can be given.
conf_dir="$root/.strata/containers"
if [ -z "${CONTAINERS_CONF:-}" ]; then
  nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
  nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 16384 ]; } && nproc=16384
  mkdir -p "$conf_dir"
  sed -e "s/@NOFILE@/$nofile/g" -e "s/@NPROC@/$nproc/g" deploy/container/containers.conf \
    > "$conf_dir/containers.conf"
  export CONTAINERS_CONF="$conf_dir/containers.conf"
fi
if [ "${print_conf:-0}" = 1 ]; then echo "$CONTAINERS_CONF"; exit 0; fi

missing=()
for tool in podman:podman mmdebstrap:mmdebstrap runc:runc newuidmap:uidmap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  say "installing ${missing[*]} with apt"
  apt=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}")
  "${apt[@]}" >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && "${apt[@]}" >/dev/null; }
fi

# The base: Debian's minbase and CA certificates; each image installs what it needs.
base=localhost/stratafl-base:bookworm
recipe="bookworm minbase ca-certificates nodoc v1"
recipe_id=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
have=$(podman image inspect --format '{{index .Labels "org.stratafl.recipe"}}' "$base" 2>/dev/null || true)
if [ "$have" != "$recipe_id" ]; then
  say "making $base with mmdebstrap ($recipe)"
  started=$SECONDS
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$work/rootfs.tar"
  podman import --quiet --change "LABEL org.stratafl.recipe=$recipe_id" \
    --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$base" >/dev/null
  rm -rf "$work"; trap - EXIT
  say "made $base in $((SECONDS - started)) s"
fi

python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
# The package's version comes from git (setuptools-scm); a tag may not hold '+'.
version=$("$python" -m setuptools_scm 2>/dev/null || git describe --tags --always 2>/dev/null || echo 0)
version=${version//+/-}
image=${tag:-localhost/stratafl:$version}
# What the stratafl image is made of: the package's sources and the build's arguments.
source_id=$( { find src pyproject.toml README.md deploy/container -type f ! -path '*.egg-info/*' \
    ! -path '*__pycache__*' ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum
  printf '%s\n' "${build_args[@]+"${build_args[@]}"}"; } | sha256sum | cut -c1-16)
have=$(podman image inspect --format '{{index .Labels "org.stratafl.source"}}' "$image" 2>/dev/null || true)
if [ "$force" = 1 ] || [ "$have" != "$source_id" ]; then
  say "building $image"
  started=$SECONDS
  context=$(mktemp -d); trap 'rm -rf "$context"' EXIT
  "$python" -m pip wheel --quiet --no-deps --wheel-dir "$context/dist" . >/dev/null
  rm -rf build src/*.egg-info
  # pip in the build trusts what the host trusts (a proxy that intercepts TLS to PyPI).
  host_ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
  trust=()
  [ -r "$host_ca" ] && trust=(--volume "$host_ca:/run/host-ca.crt:ro" --build-arg PIP_CA=/run/host-ca.crt)
  podman build --quiet --format docker --file deploy/container/Containerfile --tag "$image" "${trust[@]}" \
    --label "org.stratafl.source=$source_id" --label "org.opencontainers.image.version=$version" \
    "${build_args[@]+"${build_args[@]}"}" "$context" >/dev/null
  rm -rf "$context"; trap - EXIT
  say "built $image in $((SECONDS - started)) s"
fi
[ -n "$tag" ] || podman tag "$image" localhost/stratafl:latest

if [ "$postgres" = 1 ]; then
  pg=localhost/stratafl-postgres:15
  pg_id=$(cat deploy/container/postgres/* | sha256sum | cut -c1-16)
  have=$(podman image inspect --format '{{index .Labels "org.stratafl.source"}}' "$pg" 2>/dev/null || true)
  if [ "$force" = 1 ] || [ "$have" != "$pg_id" ]; then
    say "building $pg"
    started=$SECONDS
    podman build --quiet --format docker --tag "$pg" --label "org.stratafl.source=$pg_id" \
      deploy/container/postgres >/dev/null
    say "built $pg in $((SECONDS - started)) s"
  fi
fi
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^localhost/stratafl' >&2
