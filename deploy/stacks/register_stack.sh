#!/usr/bin/env bash
# Register a ZenML stack that runs the IAT pipelines on Kubernetes, with ZenML's Kubernetes orchestrator or its
# Kubeflow (Pipelines 2) orchestrator, an S3 or GCS artifact store and a container registry. The stack is
# registered, not activated: the local stack stays the default. See deploy/README.md, section 4.
#
#   deploy/stacks/register_stack.sh kubernetes|kubeflow
#
# Run from the repository root with the project's virtual environment active, after `zenml login <server>`
# (a remote orchestrator needs a ZenML server that the cluster's pods reach). Reads:
#   IAT_ARTIFACTS          s3://<bucket>/<prefix> or gs://<bucket>/<prefix>: the artifact store
#   IAT_REGISTRY           <registry>/<repository> the cluster pulls images from (Docker pushes there)
#   KUBE_CONTEXT           kubectl context of the cluster (default: the current one)
#   IAT_NAMESPACE          kubernetes: namespace of the step pods (default: zenml; the shared volume lives there)
#   KFP_HOST               kubeflow, multi-user deployments: the Kubeflow Pipelines API URL
#   IAT_ARTIFACT_SECRET    optional: a ZenML secret with the bucket's credentials (else the pods' own identity)
#   IAT_S3_ENDPOINT        optional: an S3-compatible endpoint (MinIO, Ceph) instead of AWS
set -euo pipefail

orchestrator=${1:-}
case "$orchestrator" in
  kubernetes | kubeflow) ;;
  *) echo "usage: $0 kubernetes|kubeflow" >&2; exit 2 ;;
esac
: "${IAT_ARTIFACTS:?set IAT_ARTIFACTS=s3://<bucket>/<prefix> or gs://<bucket>/<prefix>}"
: "${IAT_REGISTRY:?set IAT_REGISTRY=<registry>/<repository>}"
case "$IAT_ARTIFACTS" in
  s3://*) store_flavor=s3 ;;
  gs://*) store_flavor=gcp ;;
  *) echo "IAT_ARTIFACTS must start with s3:// or gs://" >&2; exit 2 ;;
esac
# The client config `iat` uses (iatcli/env.py), so `iat` and `zenml` see the same server and stacks.
export ZENML_CONFIG_PATH=${ZENML_CONFIG_PATH:-${IAT_HOME:-$PWD}/.zenml}

if ! python -c 'import sys; from zenml.client import Client; sys.exit(Client().zen_store.type.value != "rest")'; then
  echo "the ZenML client talks to a local store: run 'zenml login <server>' first (step pods report to the server)" >&2
  exit 1
fi

# Python packages of the integrations (kubernetes / kubeflow, s3 / gcp) into this environment.
zenml integration install -y "$orchestrator" "$store_flavor"

missing() { ! zenml "$1" describe "$2" >/dev/null 2>&1; }

if missing artifact-store iat_artifacts; then
  args=(--path="$IAT_ARTIFACTS")
  [[ -n "${IAT_ARTIFACT_SECRET:-}" ]] && args+=(--authentication_secret="$IAT_ARTIFACT_SECRET")
  [[ -n "${IAT_S3_ENDPOINT:-}" ]] && args+=(--client_kwargs="{\"endpoint_url\": \"$IAT_S3_ENDPOINT\"}")
  zenml artifact-store register iat_artifacts --flavor="$store_flavor" "${args[@]}"
fi
if missing container-registry iat_registry; then
  zenml container-registry register iat_registry --flavor=default --uri="$IAT_REGISTRY"
fi

context=${KUBE_CONTEXT:-$(kubectl config current-context)}
name="iat_$orchestrator"
if missing orchestrator "$name"; then
  if [[ "$orchestrator" == kubernetes ]]; then
    zenml orchestrator register "$name" --flavor=kubernetes \
      --kubernetes_context="$context" --kubernetes_namespace="${IAT_NAMESPACE:-zenml}"
  elif [[ -n "${KFP_HOST:-}" ]]; then
    zenml orchestrator register "$name" --flavor=kubeflow --kubeflow_hostname="$KFP_HOST"
  else
    zenml orchestrator register "$name" --flavor=kubeflow --kubernetes_context="$context"
  fi
fi
if missing stack "$name"; then
  # Images are built by the local Docker engine (ZenML's default image builder) and pushed to iat_registry.
  zenml stack register "$name" -o "$name" -a iat_artifacts -c iat_registry
fi
zenml stack describe "$name"
echo "registered stack $name; the active stack is unchanged: $(zenml stack get 2>/dev/null || true)"
