{{/*
Instance name: the chart name, or the alias the parent runs it under in kebab case
(dedupeRedis -> dedupe-redis), so that two instances in one release do not collide.
*/}}
{{- define "redis.name" -}}
{{- .Chart.Name | kebabcase | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name: <release>-<name> unless overridden. The parent chart derives the host the same way. */}}
{{- define "redis.fullname" -}}
{{- default (printf "%s-%s" .Release.Name (include "redis.name" .)) .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "redis.labels" -}}
{{ include "redis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .Values.component }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "redis.secretName" -}}
{{- default (include "redis.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{/*
The --maxmemory argument: .Values.maxmemory, or else maxmemoryPercent of resources.limits.memory
(an integer with no suffix or k, M, G, Ki, Mi, Gi), in whole MiB. Never 0, which Redis reads as
"no limit".
*/}}
{{- define "redis.maxmemory" -}}
{{- if .Values.maxmemory -}}
{{- .Values.maxmemory -}}
{{- else -}}
{{- $limit := toString (dig "limits" "memory" "" .Values.resources) -}}
{{- $number := regexFind "^[0-9]+" $limit -}}
{{- $unit := trimPrefix $number $limit -}}
{{- $factors := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 -}}
{{- if or (not $number) (not (hasKey $factors $unit)) -}}
{{- fail (printf "%s: maxmemory is empty, so it is derived from resources.limits.memory, which must be an integer with no suffix or k, M, G, Ki, Mi, Gi (got %q)" .Chart.Name $limit) -}}
{{- end -}}
{{- $bytes := mul (atoi $number) (get $factors $unit) -}}
{{- $mib := div (div (mul $bytes .Values.maxmemoryPercent) 100) 1048576 -}}
{{- if lt $mib 1 -}}
{{- fail (printf "%s: %d%% of resources.limits.memory %s is less than 1 MiB" .Chart.Name (int .Values.maxmemoryPercent) $limit) -}}
{{- end -}}
{{- printf "%dmb" $mib -}}
{{- end -}}
{{- end -}}
