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
Refuse combinations that would break the bridge at run time. The SQLite outbox takes an
exclusive lock on its directory, so pods cannot share one volume.
*/}}
{{- define "bridge.validate" -}}
{{- if and .Values.persistence.enabled (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "persistence.enabled keeps the outbox on one ReadWriteOnce volume, which only one pod can use: keep replicaCount 1 and autoscaling.enabled false (see the chart's README, \"One replica\")" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) }}
{{- fail "ingress.enabled needs ingress.hosts: the host name(s) Sentry sends webhooks to" }}
{{- end }}
{{- end }}
