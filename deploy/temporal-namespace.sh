#!/bin/sh
# One-shot (temporalio/admin-tools): the namespace and the custom search attributes that
# operators filter balances on in the Web UI. Idempotent: creates only what is missing.
set -eu
: "${TEMPORAL_ADDRESS:?}" "${TEMPORAL_NAMESPACE:?}" "${SEARCH_ATTRIBUTES:?}"
export TEMPORAL_ADDRESS
tries=0
until temporal operator cluster health >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 60 ] || { echo "temporal at $TEMPORAL_ADDRESS is not healthy" >&2; exit 1; }
  sleep 2
done
ns="--namespace $TEMPORAL_NAMESPACE"
temporal operator namespace describe $ns >/dev/null 2>&1 ||
  temporal operator namespace create $ns --retention "${NAMESPACE_RETENTION:-30d}"
known=$(temporal operator search-attribute list $ns)
for pair in $SEARCH_ATTRIBUTES; do
  name=${pair%%=*}
  if ! echo "$known" | grep -qw "$name"; then
    temporal operator search-attribute create $ns --name "$name" --type "${pair#*=}"
  fi
done
echo "namespace $TEMPORAL_NAMESPACE has its search attributes"
