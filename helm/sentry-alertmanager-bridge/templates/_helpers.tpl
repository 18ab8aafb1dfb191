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
with SQLite (the outbox is the state: a rollout must not drop it) and not with PostgreSQL.
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
Whether webhooks can be authenticated at all: a credential in `secrets`, an existingSecret
(whose keys the chart cannot see) or an explicit opt-out in the config. NOTES.txt warns otherwise.
*/}}
{{- define "bridge.authenticated" -}}
{{- $s := .Values.secrets }}
{{- $sentry := .Values.config.sentry | default dict }}
{{- if or .Values.existingSecret $s.sentryClientSecret $s.sentryServiceHookSecret $s.sentryLegacyToken $sentry.allow_unauthenticated }}true{{ end }}
{{- end }}

{{/*
The bridge's port: config server.port, else the bridge's default.
*/}}
{{- define "bridge.port" -}}
{{- (.Values.config.server | default dict).port | default 8080 | int }}
{{- end }}

{{/*
config shutdown.grace_period in whole seconds (rounded up). The bridge accepts a number of
seconds or a duration with one unit (values.schema.json allows only those forms).
*/}}
{{- define "bridge.graceSeconds" -}}
{{- $g := (.Values.config.shutdown | default dict).grace_period | default "25s" | toString | trim }}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 }}
{{- $unit := regexFind "(ms|s|m|h|d)$" $g | default "s" }}
{{- $number := trimSuffix $unit $g | trim | float64 }}
{{- mulf $number (get $units $unit) | ceil | int }}
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
own state, so pods cannot be several; its outbox takes an exclusive lock on its directory, so
pods cannot share one volume either.
*/}}
{{- define "bridge.validate" -}}
{{- $replicas := include "bridge.replicas" . | int }}
{{- $store := (.Values.config.store | default dict) }}
{{- if or (hasKey $store "backend") (hasKey ($store.postgres | default dict) "dsn") }}
{{- fail "set store.backend and store.postgres.dsn (or store.postgres.existingSecret), not config.store.backend or config.store.postgres.dsn: the chart renders those two from them" }}
{{- end }}
{{- if and (not (include "bridge.postgres" .)) (or (gt $replicas 1) .Values.autoscaling.enabled) }}
{{- fail "replicaCount > 1 and autoscaling.enabled need store.backend: postgres: with the embedded SQLite store each pod keeps its own outbox, dedup windows and active alerts, so replicas would split them (see docs/scaling.md)" }}
{{- end }}
{{- if and (include "bridge.persistence" .) (or (gt $replicas 1) .Values.autoscaling.enabled) }}
{{- fail "persistence.enabled keeps the outbox on one ReadWriteOnce volume, which only one pod can use: keep replicaCount 1 and autoscaling.enabled false (see the chart's README, \"Replicas\")" }}
{{- end }}
{{- if and (include "bridge.postgres" .) (not (or .Values.store.postgres.dsn .Values.store.postgres.existingSecret .Values.existingSecret)) }}
{{- fail "store.backend: postgres needs the database's URL: store.postgres.dsn, store.postgres.existingSecret, or a BRIDGE_DATABASE_URL key in existingSecret" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs ingress.hosts: the host name(s) Sentry sends webhooks to" }}
{{- end }}
{{- end }}
