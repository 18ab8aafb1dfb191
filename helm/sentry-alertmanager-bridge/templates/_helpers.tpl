{{/*
The chart's name, truncated to 63 characters (the DNS label limit of Kubernetes names).
*/}}
{{- define "bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, unless it already contains the chart's name.
*/}}
{{- define "bridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bridge.labels" -}}
helm.sh/chart: {{ include "bridge.chart" . }}
{{ include "bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sentry-alertmanager-bridge
{{- end }}

{{/*
Labels of the pods that are not the bridge (the check-config hook, helm test): not its
selector labels, so neither the Service nor the ReplicaSet picks them up.
*/}}
{{- define "bridge.hookLabels" -}}
helm.sh/chart: {{ include "bridge.chart" . }}
app.kubernetes.io/name: {{ include "bridge.name" . }}-hook
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The check-config hook's Job and ConfigMap (63 characters at most, as Job names must be).
*/}}
{{- define "bridge.checkName" -}}
{{- printf "%s-check-config" (include "bridge.fullname" . | trunc 50 | trimSuffix "-") }}
{{- end }}

{{/*
The bridge's config file: `config`, with store.backend and the DSN's variable from the
chart's own store values. The ConfigMap and the check-config hook hold the same text.
*/}}
{{- define "bridge.configYaml" -}}
{{- $config := deepCopy .Values.config }}
{{- $store := deepCopy ($config.store | default dict) }}
{{- $_ := set $store "backend" .Values.store.backend }}
{{- if include "bridge.postgres" . }}
{{- $_ := set $store "postgres" (merge (dict "dsn" "${BRIDGE_DATABASE_URL}") ($store.postgres | default dict)) }}
{{- end }}
{{- $_ := set $config "store" $store }}
{{- toYaml $config }}
{{- end }}

{{- define "bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "bridge.image" -}}
{{- $repository := required "image.repository is required: no image is published. Build it from the repository's Dockerfile and push it (docs/install.md, step 1), or for kind: docker build -t sentry-alertmanager-bridge:0.1.0 . && kind load docker-image sentry-alertmanager-bridge:0.1.0, then --set image.repository=sentry-alertmanager-bridge" .Values.image.repository }}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" $repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/*
The Secret holding the credentials: the user's existingSecret or the one this chart makes.
*/}}
{{- define "bridge.secretName" -}}
{{- .Values.existingSecret | default (include "bridge.fullname" .) }}
{{- end }}

{{/*
Values of `secrets` by the environment variable the shipped config reads them from.
*/}}
{{- define "bridge.secretEnv" -}}
SENTRY_CLIENT_SECRET: {{ .Values.secrets.sentryClientSecret | quote }}
SENTRY_SERVICE_HOOK_SECRET: {{ .Values.secrets.sentryServiceHookSecret | quote }}
SENTRY_LEGACY_TOKEN: {{ .Values.secrets.sentryLegacyToken | quote }}
SENTRY_API_TOKEN: {{ .Values.secrets.sentryApiToken | quote }}
ALERTMANAGER_PASSWORD: {{ .Values.secrets.alertmanagerPassword | quote }}
ALERTMANAGER_BEARER_TOKEN: {{ .Values.secrets.alertmanagerBearerToken | quote }}
{{- if and (include "bridge.postgres" .) (not .Values.store.postgres.existingSecret) }}
BRIDGE_DATABASE_URL: {{ .Values.store.postgres.dsn | quote }}
{{- end }}
{{- end }}

{{/*
"true" when the bridge keeps its state in PostgreSQL (store.backend), shared by the replicas.
*/}}
{{- define "bridge.postgres" -}}
{{- if eq .Values.store.backend "postgres" }}true{{ end }}
{{- end }}

{{/*
Replicas: replicaCount, or by default 2 with PostgreSQL (a rollout or a node drain keeps one
answering Sentry) and 1 with the embedded SQLite store.
*/}}
{{- define "bridge.replicas" -}}
{{- if kindIs "invalid" .Values.replicaCount }}
{{- ternary 2 1 (eq .Values.store.backend "postgres") }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
"true" when the data directory is a PersistentVolumeClaim: persistence.enabled, or by default
with SQLite (the store is the state: a rollout must not drop it) and not with PostgreSQL.
*/}}
{{- define "bridge.persistence" -}}
{{- $enabled := .Values.persistence.enabled }}
{{- if kindIs "invalid" $enabled }}
{{- if not (include "bridge.postgres" .) }}true{{ end }}
{{- else if $enabled }}true{{ end }}
{{- end }}

{{/*
"true" when the chart makes a PodDisruptionBudget: podDisruptionBudget.enabled, or by default
with PostgreSQL (several replicas; with one, any budget either blocks drains or allows all).
*/}}
{{- define "bridge.pdb" -}}
{{- $enabled := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "invalid" $enabled }}
{{- if include "bridge.postgres" . }}true{{ end }}
{{- else if $enabled }}true{{ end }}
{{- end }}

{{/*
Whether webhooks can be authenticated at all: config sentry.allow_unauthenticated, or one of
config sentry.client_secrets, service_hook_secrets, legacy_token that is not empty once the
variables of `secrets` left empty are taken out (with existingSecret, whose keys the chart
cannot see, or a variable from elsewhere, it may be set). NOTES.txt warns otherwise.
*/}}
{{- define "bridge.authenticated" -}}
{{- $s := .Values.secrets }}
{{- $unset := dict }}
{{- if not .Values.existingSecret }}
{{- $vars := dict "SENTRY_CLIENT_SECRET" $s.sentryClientSecret "SENTRY_SERVICE_HOOK_SECRET" $s.sentryServiceHookSecret "SENTRY_LEGACY_TOKEN" $s.sentryLegacyToken }}
{{- range $name, $value := $vars }}{{ if not $value }}{{ $_ := set $unset $name true }}{{ end }}{{ end }}
{{- end }}
{{- $sentry := .Values.config.sentry | default dict }}
{{- $ok := $sentry.allow_unauthenticated }}
{{- range $key := list "client_secrets" "service_hook_secrets" "legacy_token" }}
{{- $value := get $sentry $key | default "" }}
{{- $text := ternary (join "," $value) (toString $value) (kindIs "slice" $value) }}
{{- range $name, $_ := $unset }}
{{- $text = regexReplaceAll (printf "\\$\\{%s(:-)?\\}" $name) $text "" }}
{{- end }}
{{- if trim (replace "," "" $text) }}{{ $ok = true }}{{ end }}
{{- end }}
{{- if $ok }}true{{ end }}
{{- end }}

{{/*
The bridge's port: config server.port, else the bridge's default.
*/}}
{{- define "bridge.port" -}}
{{- (.Values.config.server | default dict).port | default 8080 | int }}
{{- end }}

{{/*
A duration of the config in seconds, as bridge.config reads it: a number of seconds or a
number with one unit (ms, s, m, h, d; values.schema.json admits only those forms). Empty for
a ${VAR}, which only the bridge can read.
*/}}
{{- define "bridge.seconds" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- . | float64 }}
{{- else if not (contains "${" (toString .)) }}
{{- $d := toString . | trim }}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 }}
{{- $unit := regexFind "(ms|s|m|h|d)$" $d | default "s" }}
{{- mulf (trimSuffix $unit $d | trim | float64) (get $units $unit) }}
{{- end }}
{{- end }}

{{/*
config shutdown.grace_period in whole seconds (rounded up); 25 for a ${VAR}.
*/}}
{{- define "bridge.graceSeconds" -}}
{{- $g := include "bridge.seconds" ((.Values.config.shutdown | default dict).grace_period | default "25s") | default "25" }}
{{- $g | float64 | ceil | int }}
{{- end }}

{{/*
The pod's grace: the preStop delay, then the bridge's drain, plus a margin for the process
to exit before the kubelet's SIGKILL.
*/}}
{{- define "bridge.terminationGracePeriodSeconds" -}}
{{- add (include "bridge.graceSeconds" . | int) .Values.preStopDelaySeconds 5 }}
{{- end }}

{{/*
Refuse combinations that would break the bridge at run time. With SQLite each pod keeps its
own state, so pods cannot be several; its store takes an exclusive lock on its directory, so
pods cannot share one volume either.
*/}}
{{- define "bridge.validate" -}}
{{- $replicas := include "bridge.replicas" . | int }}
{{- $store := (.Values.config.store | default dict) }}
{{- if or (hasKey $store "backend") (hasKey ($store.postgres | default dict) "dsn") }}
{{- fail "set store.backend and store.postgres.dsn (or store.postgres.existingSecret), not config.store.backend or config.store.postgres.dsn: the chart renders those two from them" }}
{{- end }}
{{- if and (not (include "bridge.postgres" .)) (or (gt $replicas 1) .Values.autoscaling.enabled) }}
{{- fail "replicaCount > 1 and autoscaling.enabled need store.backend: postgres: with the embedded SQLite store each pod keeps its own store, dedup windows and active alerts, so replicas would split them (see docs/scaling.md)" }}
{{- end }}
{{- if and (include "bridge.persistence" .) (or (gt $replicas 1) .Values.autoscaling.enabled) }}
{{- fail "persistence.enabled keeps the store on one ReadWriteOnce volume, which only one pod can use: keep replicaCount 1 and autoscaling.enabled false (see the chart's README, \"Replicas\")" }}
{{- end }}
{{- if and (include "bridge.postgres" .) (not (or .Values.store.postgres.dsn .Values.store.postgres.existingSecret .Values.existingSecret)) }}
{{- fail "store.backend: postgres needs the database's URL: store.postgres.dsn, store.postgres.existingSecret, or a BRIDGE_DATABASE_URL key in existingSecret" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs ingress.hosts: the host name(s) Sentry sends webhooks to" }}
{{- end }}
{{- include "bridge.validateConfig" . }}
{{- end }}

{{/*
The bridge's own checks (bridge/config.py: Config._checks, Alertmanager._one_auth,
PostgresSSL._checks, Spool.accept_timeout's bound on a duration written as text) that the
schema cannot express and the chart can see, so `helm template` and `helm lint` refuse them
too; the check-config hook runs all of the bridge's checks with the new image before any pod
changes. The defaults are bridge/config.py's (tests/test_helm.py renders each check at the
bridge's boundary, and probes every key against the bridge).
*/}}
{{- define "bridge.validateConfig" -}}
{{- $c := .Values.config }}
{{- $am := $c.alertmanager | default dict }}
{{- $window := include "bridge.seconds" (($c.dedup | default dict).window | default 300) }}
{{- $lifetime := include "bridge.seconds" ($am.alert_lifetime | default 3600) }}
{{- if and $window $lifetime (ge ($window | float64) ($lifetime | float64)) }}
{{- fail "config.dedup.window must be shorter than config.alertmanager.alert_lifetime, or an alert Sentry keeps firing would expire in Alertmanager while its repeats are suppressed (the bridge refuses to start)" }}
{{- end }}
{{- $urls := $am.urls | default (list "http://localhost:9093") }}
{{- /* A comma-separated string counts its parts; a ${VAR} is known at start only. */}}
{{- if and (kindIs "string" $urls) (contains "${" $urls) }}
{{- $urls = list }}
{{- else if kindIs "string" $urls }}
{{- $urls = compact (splitList "," ($urls | nospace)) }}
{{- end }}
{{- $pool := ((($c.store | default dict).postgres | default dict).pool_size | default 10) }}
{{- $needed := add 3 (mul 2 (len $urls)) }}
{{- if and (include "bridge.postgres" .) (not (kindIs "string" $pool)) (lt ($pool | int) $needed) }}
{{- fail (printf "config.store.postgres.pool_size: %v is too small for %d Alertmanager(s); at least %d (the bridge refuses to start)" $pool (len $urls) $needed) }}
{{- end }}
{{- $sentry := $c.sentry | default dict }}
{{- $credentials := list }}
{{- range $key := list "client_secrets" "service_hook_secrets" "legacy_token" }}
{{- $value := get $sentry $key | default "" }}
{{- $credentials = append $credentials (ternary (join "" $value) (toString $value) (kindIs "slice" $value) | trim) }}
{{- end }}
{{- if not (or (compact $credentials) $sentry.allow_unauthenticated) }}
{{- fail "config.sentry sets client_secrets, service_hook_secrets and legacy_token all empty, so no webhook could authenticate and the bridge refuses to start; leave them as ${SENTRY_CLIENT_SECRET:-} etc. (values.yaml) and set secrets or existingSecret" }}
{{- end }}
{{- $ssl := ((($c.store | default dict).postgres | default dict).ssl | default dict) }}
{{- $cert := toString ($ssl.cert | default "") | trim }}
{{- $key := toString ($ssl.key | default "") | trim }}
{{- if ne (empty $cert) (empty $key) }}
{{- fail "config.store.postgres.ssl: cert and key go together (the bridge refuses to start)" }}
{{- end }}
{{- if and (or $cert (toString ($ssl.root_cert | default "") | trim)) (has ($ssl.mode | default "unset") (list "unset" "disable")) }}
{{- fail "config.store.postgres.ssl: certificates are set but mode is unset or disable; set mode to require, verify-ca or verify-full (the bridge refuses to start)" }}
{{- end }}
{{- $accept := include "bridge.seconds" ((($c.store | default dict).spool | default dict).accept_timeout | default 0.3) }}
{{- if and $accept (gt ($accept | float64) 0.8) }}
{{- fail "config.store.spool.accept_timeout: at most 0.8s, so a spooled webhook is still answered within Sentry's one second (the bridge refuses to start)" }}
{{- end }}
{{- $server := $c.server | default dict }}
{{- $body := $server.max_body_bytes | default 1048576 }}
{{- $pending := $server.max_pending_body_bytes | default 67108864 }}
{{- if and (not (kindIs "string" $body)) (not (kindIs "string" $pending)) (lt ($pending | int64) ($body | int64)) }}
{{- fail "config.server.max_pending_body_bytes must be at least config.server.max_body_bytes (the bridge refuses to start)" }}
{{- end }}
{{- if eq (toString ($server.admin_port | default 8081)) (toString ($server.port | default 8080)) }}
{{- fail "config.server.admin_port must differ from config.server.port (the bridge refuses to start)" }}
{{- end }}
{{- $inFlight := $server.max_concurrency | default 256 }}
{{- $connections := $server.max_connections | default 4096 }}
{{- if and (not (kindIs "string" $inFlight)) (not (kindIs "string" $connections)) (lt ($connections | int64) (add ($inFlight | int64) 16)) }}
{{- fail "config.server.max_connections must exceed config.server.max_concurrency by at least 16 (the bridge refuses to start)" }}
{{- end }}
{{- if and $am.basic_auth (or .Values.secrets.alertmanagerBearerToken (and $am.bearer_token (not (contains "${" (toString $am.bearer_token))))) }}
{{- fail "config.alertmanager.basic_auth and a bearer token (secrets.alertmanagerBearerToken): set one, not both (the bridge refuses to start)" }}
{{- end }}
{{- end }}
