#!/usr/bin/env bash
# Builds the pinned Kubernetes control-plane binaries, etcd, controller-gen and
# helm from the Go module proxy into a git-ignored, version-keyed folder, and
# skips every tool that is already there. Prints the assets folder (for
# KUBEBUILDER_ASSETS) on its last line.
#
#   hack/tools.sh            build whatever is missing (k8s, etcd, controller-gen)
#   hack/tools.sh helm       also build helm
#
# Env: AGENTRY_TOOLS_DIR overrides the cache folder (default: <repo>/.tools).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${AGENTRY_TOOLS_DIR:-$ROOT/.tools}"

K8S_VERSION="${K8S_VERSION:-1.37.2}"
K8S_STAGING_VERSION="0.${K8S_VERSION#1.}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
CONTROLLER_GEN_VERSION="${CONTROLLER_GEN_VERSION:-0.23.0}"
HELM_VERSION="${HELM_VERSION:-3.22.0}"

K8S_DIR="$TOOLS_DIR/k8s-v$K8S_VERSION"
ETCD_DIR="$TOOLS_DIR/etcd-v$ETCD_VERSION"
CG_DIR="$TOOLS_DIR/controller-gen-v$CONTROLLER_GEN_VERSION"
HELM_DIR="$TOOLS_DIR/helm-v$HELM_VERSION"
ASSETS_DIR="$TOOLS_DIR/assets-k8s-v$K8S_VERSION-etcd-v$ETCD_VERSION"

log() { echo "tools: $*" >&2; }

# A throwaway module per tool keeps the project's go.mod free of build-only deps.
scratch_module() {
  local dir="$1" name="$2"
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'module agentry.local/tools/%s\n\ngo 1.26\n' "$name" >"$dir/go.mod"
}

build_k8s() {
  local bins=(kube-apiserver kubectl kube-scheduler kube-controller-manager) missing=()
  for b in "${bins[@]}"; do [[ -x "$K8S_DIR/$b" ]] || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "building ${missing[*]} v$K8S_VERSION (about 6 minutes on 2 cores when nothing is cached)"
  local work="$TOOLS_DIR/.build/k8s-v$K8S_VERSION"
  scratch_module "$work" k8s
  (
    cd "$work"
    go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" >k8s.json
    local gomod
    gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' k8s.json)"
    # k8s.io/kubernetes replaces its staging modules with ./staging paths; point
    # each at the published module of the matching version instead.
    {
      echo "require k8s.io/kubernetes v$K8S_VERSION"
      grep -oE '^[[:space:]]*k8s\.io/[A-Za-z0-9._/-]+ => \./staging' "$gomod" |
        awk '{print "replace " $1 " => " $1 " v'"$K8S_STAGING_VERSION"'"}'
    } >>go.mod
    printf 'package tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' >tools.go
    go mod tidy >/dev/null
    mkdir -p "$K8S_DIR"
    for b in "${missing[@]}"; do
      case "$b" in
        kubectl) pkg=k8s.io/kubernetes/cmd/kubectl ;;
        *) pkg="k8s.io/kubernetes/cmd/$b" ;;
      esac
      # kubectl's main lives in k8s.io/kubectl, reached through k8s.io/kubernetes/cmd/kubectl.
      go get "$pkg@v$K8S_VERSION" >/dev/null 2>&1 || true
      log "  go build $pkg"
      CGO_ENABLED=0 go build -trimpath -ldflags="-s -w \
        -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
        -X k8s.io/component-base/version.gitMajor=1 \
        -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.} \
        -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION" \
        -o "$K8S_DIR/$b.tmp" "$pkg"
      mv "$K8S_DIR/$b.tmp" "$K8S_DIR/$b"
    done
  )
}

build_etcd() {
  [[ -x "$ETCD_DIR/etcd" ]] && return 0
  log "building etcd v$ETCD_VERSION (about 2 minutes)"
  local work="$TOOLS_DIR/.build/etcd-v$ETCD_VERSION"
  scratch_module "$work" etcd
  (
    cd "$work"
    printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null 2>&1
    go mod tidy >/dev/null
    mkdir -p "$ETCD_DIR"
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$ETCD_DIR/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$ETCD_DIR/etcd.tmp" "$ETCD_DIR/etcd"
  )
}

go_install() { # dir module version
  local dir="$1" mod="$2" ver="$3" name
  name="$(basename "$mod")"
  [[ -x "$dir/$name" ]] && return 0
  log "building $name v$ver"
  mkdir -p "$dir"
  GOBIN="$dir" CGO_ENABLED=0 go install -trimpath "$mod@v$ver"
}

assemble_assets() {
  mkdir -p "$ASSETS_DIR"
  for b in kube-apiserver kubectl kube-scheduler kube-controller-manager; do
    ln -sf "$K8S_DIR/$b" "$ASSETS_DIR/$b"
  done
  ln -sf "$ETCD_DIR/etcd" "$ASSETS_DIR/etcd"
  ln -sf "$CG_DIR/controller-gen" "$ASSETS_DIR/controller-gen"
  [[ -x "$HELM_DIR/helm" ]] && ln -sf "$HELM_DIR/helm" "$ASSETS_DIR/helm"
  return 0
}

main() {
  mkdir -p "$TOOLS_DIR"
  local want_helm=false
  for a in "$@"; do [[ "$a" == helm ]] && want_helm=true; done
  build_etcd
  go_install "$CG_DIR" sigs.k8s.io/controller-tools/cmd/controller-gen "$CONTROLLER_GEN_VERSION"
  build_k8s
  if $want_helm; then go_install "$HELM_DIR" helm.sh/helm/v3/cmd/helm "$HELM_VERSION"; fi
  assemble_assets
  echo "$ASSETS_DIR"
}

main "$@"
