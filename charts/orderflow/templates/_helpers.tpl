{{/* Chart name, overridable. */}}
{{- define "orderflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, suffixed with the chart name unless it already contains it. */}}
{{- define "orderflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orderflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orderflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "orderflow.labels" -}}
{{ include "orderflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: orderflow
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "orderflow.chart" . }}
{{- end -}}

{{/*
The three services, keyed by component name (also the image, binary and container name),
each with its values key. Iterated in this (sorted) order everywhere.
*/}}
{{- define "orderflow.components" -}}
analytics-service: analyticsService
notification-worker: notificationWorker
order-service: orderService
{{- end -}}

{{/* Consumers that KEDA may scale on their queue depth. */}}
{{/* The queue a consuming component reads: (dict "root" $ "component" <component>). */}}
{{- define "orderflow.consumerQueue" -}}
{{- $queues := .root.Values.queues -}}
{{- get (dict "analytics-service" $queues.analytics "notification-worker" $queues.notifications) .component -}}
{{- end -}}

{{- define "orderflow.queueConsumers" -}}
analytics-service: analyticsService
notification-worker: notificationWorker
{{- end -}}

{{/* Usage: include "orderflow.componentName" (dict "root" $ "component" "order-service") */}}
{{- define "orderflow.componentName" -}}
{{- printf "%s-%s" (include "orderflow.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "orderflow.componentSelectorLabels" -}}
{{ include "orderflow.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "orderflow.componentLabels" -}}
{{ include "orderflow.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Usage: include "orderflow.image" (dict "root" $ "svc" $svc) */}}
{{- define "orderflow.image" -}}
{{- $tag := .svc.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- with .root.Values.global.imageRegistry -}}{{ trimSuffix "/" . }}/{{- end -}}
{{- printf "%s:%s" .svc.image.repository $tag -}}
{{- end -}}

{{- define "orderflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "orderflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Seconds the kubelet waits after starting termination before SIGKILL. */}}
{{- define "orderflow.terminationGracePeriodSeconds" -}}
{{- add .Values.preStopSleepSeconds .Values.shutdownGracePeriodSeconds 10 -}}
{{- end -}}

{{/* ---- Datastore endpoints: in-chart subchart or external ---- */}}

{{- define "orderflow.mysql.host" -}}
{{- if .Values.mysql.enabled -}}
{{- default (printf "%s-mysql" .Release.Name) .Values.mysql.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- required "externalMysql.host is required when mysql.enabled=false" .Values.externalMysql.host -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.mysql.port" -}}
{{- if .Values.mysql.enabled }}3306{{ else }}{{ .Values.externalMysql.port }}{{ end -}}
{{- end -}}

{{- define "orderflow.mysql.secretName" -}}
{{- if .Values.mysql.enabled -}}
{{- .Values.mysql.auth.existingSecret | default (include "orderflow.mysql.host" .) -}}
{{- else -}}
{{- required "externalMysql.existingSecret is required when mysql.enabled=false" .Values.externalMysql.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.rabbitmq.host" -}}
{{- if .Values.rabbitmq.enabled -}}
{{- default (printf "%s-rabbitmq" .Release.Name) .Values.rabbitmq.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- required "externalRabbitmq.host is required when rabbitmq.enabled=false" .Values.externalRabbitmq.host -}}
{{- end -}}
{{- end -}}

{{/* Host as seen from other namespaces (the KEDA operator runs in its own). */}}
{{- define "orderflow.rabbitmq.clusterHost" -}}
{{- if .Values.rabbitmq.enabled -}}
{{- printf "%s.%s.svc" (include "orderflow.rabbitmq.host" .) .Release.Namespace -}}
{{- else -}}
{{- include "orderflow.rabbitmq.host" . -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.rabbitmq.port" -}}
{{- if .Values.rabbitmq.enabled }}5672{{ else }}{{ .Values.externalRabbitmq.port }}{{ end -}}
{{- end -}}

{{- define "orderflow.rabbitmq.vhost" -}}
{{- if .Values.rabbitmq.enabled }}{{ .Values.rabbitmq.vhost }}{{ else }}{{ .Values.externalRabbitmq.vhost }}{{ end -}}
{{- end -}}

{{- define "orderflow.rabbitmq.username" -}}
{{- if .Values.rabbitmq.enabled -}}
{{- .Values.rabbitmq.auth.username -}}
{{- else -}}
{{- required "externalRabbitmq.username is required when rabbitmq.enabled=false" .Values.externalRabbitmq.username -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.rabbitmq.secretName" -}}
{{- if .Values.rabbitmq.enabled -}}
{{- .Values.rabbitmq.auth.existingSecret | default (include "orderflow.rabbitmq.host" .) -}}
{{- else -}}
{{- required "externalRabbitmq.existingSecret is required when rabbitmq.enabled=false" .Values.externalRabbitmq.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.rabbitmq.passwordKey" -}}
{{- if .Values.rabbitmq.enabled }}rabbitmq-password{{ else }}{{ .Values.externalRabbitmq.passwordKey }}{{ end -}}
{{- end -}}

{{- define "orderflow.redis.host" -}}
{{- if .Values.redis.enabled -}}
{{- default (printf "%s-redis" .Release.Name) .Values.redis.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- required "externalRedis.host is required when redis.enabled=false" .Values.externalRedis.host -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.redis.port" -}}
{{- if .Values.redis.enabled }}6379{{ else }}{{ .Values.externalRedis.port }}{{ end -}}
{{- end -}}

{{/* Empty when the Redis has no password (external only). */}}
{{- define "orderflow.redis.secretName" -}}
{{- if .Values.redis.enabled -}}
{{- .Values.redis.auth.existingSecret | default (include "orderflow.redis.host" .) -}}
{{- else -}}
{{- .Values.externalRedis.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.redis.passwordKey" -}}
{{- if .Values.redis.enabled }}redis-password{{ else }}{{ .Values.externalRedis.passwordKey }}{{ end -}}
{{- end -}}

{{/* The notification worker's dedupe Redis (the redis subchart aliased as dedupeRedis, or external). */}}
{{- define "orderflow.dedupeRedis.host" -}}
{{- if .Values.dedupeRedis.enabled -}}
{{- default (printf "%s-dedupe-redis" .Release.Name) .Values.dedupeRedis.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- required "externalDedupeRedis.host is required when dedupeRedis.enabled=false" .Values.externalDedupeRedis.host -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.dedupeRedis.port" -}}
{{- if .Values.dedupeRedis.enabled }}6379{{ else }}{{ .Values.externalDedupeRedis.port }}{{ end -}}
{{- end -}}

{{/* Empty when the Redis has no password (external only). */}}
{{- define "orderflow.dedupeRedis.secretName" -}}
{{- if .Values.dedupeRedis.enabled -}}
{{- .Values.dedupeRedis.auth.existingSecret | default (include "orderflow.dedupeRedis.host" .) -}}
{{- else -}}
{{- .Values.externalDedupeRedis.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "orderflow.dedupeRedis.passwordKey" -}}
{{- if .Values.dedupeRedis.enabled }}redis-password{{ else }}{{ .Values.externalDedupeRedis.passwordKey }}{{ end -}}
{{- end -}}

{{/*
Which Redis a component uses: "dedupeRedis" for notification-worker (Redis only for
deduplication, on a store that neither evicts nor forgets), "redis" (the cache) for the others.
The value names the values key and the orderflow.<key>.* helpers.
*/}}
{{- define "orderflow.redisFor" -}}
{{- if eq . "notification-worker" }}dedupeRedis{{ else }}redis{{ end -}}
{{- end -}}

{{/* ---- Optional APIs ---- */}}

{{- define "orderflow.hasKeda" -}}
{{- if or (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject") (.Capabilities.APIVersions.Has "keda.sh/v1alpha1") -}}true{{- end -}}
{{- end -}}

{{- define "orderflow.hasPrometheusOperator" -}}
{{- if or (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}true{{- end -}}
{{- end -}}

{{/*
"true" when KEDA scales this component: autoscaling and keda enabled, and the API exists.
Usage: include "orderflow.usesKeda" (dict "root" $ "svc" $svc)
*/}}
{{- define "orderflow.usesKeda" -}}
{{- if and .svc.autoscaling.enabled .svc.autoscaling.keda .svc.autoscaling.keda.enabled (include "orderflow.hasKeda" .root) -}}true{{- end -}}
{{- end -}}

{{/* PromQL matchers selecting this release's service metrics (label `service` = Service name). */}}
{{- define "orderflow.promSelector" -}}
namespace="{{ .Release.Namespace }}", service=~"{{ include "orderflow.fullname" . }}-(order-service|analytics-service|notification-worker)"
{{- end -}}

{{/*
A password for a Secret the release creates: the value given, else the one the Secret already
holds (so `helm upgrade` keeps it), else a new random one. Template names are global, so the
in-chart datastores (subcharts) use this too. Without a cluster to ask (`helm template`,
`--dry-run`), an empty value renders a new random password each time.
Call with (dict "root" $ "secret" <Secret name> "key" <key> "value" <given value>).
*/}}
{{- define "orderflow.password" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- $data := dig "data" (dict) $existing -}}
{{- if hasKey $data .key -}}
{{- index $data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Annotations of a Secret holding generated passwords that a kept volume was initialised with. */}}
{{- define "orderflow.keptSecretAnnotations" -}}
# Kept on uninstall: the data volume, kept too, was initialised with these passwords.
helm.sh/resource-policy: keep
{{- end -}}

{{/*
The checksum annotation of a service's pods: the values its configuration and credentials come
from, and the data of the existing Secrets it reads (read at install/upgrade), so that changing
either rolls the pods. Generated passwords are left out: upgrades keep them.
Call with (dict "root" $ "svc" <service values> "redis" "redis"|"dedupeRedis").
*/}}
{{- define "orderflow.podChecksum" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $redisKey := .redis -}}
{{- $externalRedisKey := ternary "externalDedupeRedis" "externalRedis" (eq $redisKey "dedupeRedis") -}}
{{- $inputs := dict
    "service" .svc
    "queues" $values.queues
    "api" $values.api
    "mysql" (dict "auth" $values.mysql.auth "enabled" $values.mysql.enabled)
    "externalMysql" $values.externalMysql
    "rabbitmq" (dict "auth" $values.rabbitmq.auth "vhost" $values.rabbitmq.vhost "enabled" $values.rabbitmq.enabled)
    "externalRabbitmq" $values.externalRabbitmq
    "redis" (dict "auth" (index $values $redisKey).auth "enabled" (index $values $redisKey).enabled)
    "externalRedis" (index $values $externalRedisKey) -}}
{{- $existing := dict -}}
{{- $names := list $values.mysql.auth.existingSecret $values.externalMysql.existingSecret $values.rabbitmq.auth.existingSecret $values.externalRabbitmq.existingSecret (index $values $redisKey).auth.existingSecret (index $values $externalRedisKey).existingSecret (dig "webhook" "existingSecret" "" .svc) $values.api.auth.existingSecret -}}
{{- range $names }}
{{- if . }}
{{- $_ := set $existing . (dig "data" (dict) (lookup "v1" "Secret" $root.Release.Namespace .)) }}
{{- end }}
{{- end -}}
{{- dict "values" $inputs "existingSecrets" $existing | toJson | sha256sum -}}
{{- end -}}

{{/*
`percent` % of resources.limits.memory (an integer with no suffix or k, M, G, Ki, Mi, Gi), in whole
MiB, at least 1. For settings that must stay below the container's limit (Redis maxmemory, the
RabbitMQ memory high watermark). Call with (dict "chart" <name> "setting" <what it sets>
"resources" <resources> "percent" <percent>).
*/}}
{{- define "orderflow.percentOfMemoryLimit" -}}
{{- $limit := toString (dig "limits" "memory" "" .resources) -}}
{{- $number := regexFind "^[0-9]+" $limit -}}
{{- $unit := trimPrefix $number $limit -}}
{{- $factors := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 -}}
{{- if or (not $number) (not (hasKey $factors $unit)) -}}
{{- fail (printf "%s: %s is derived from resources.limits.memory, which must be an integer with no suffix or k, M, G, Ki, Mi, Gi (got %q)" .chart .setting $limit) -}}
{{- end -}}
{{- $bytes := mul (atoi $number) (get $factors $unit) -}}
{{- $mib := div (div (mul $bytes .percent) 100) 1048576 -}}
{{- if lt $mib 1 -}}
{{- fail (printf "%s: %d%% of resources.limits.memory %s is less than 1 MiB" .chart (int .percent) $limit) -}}
{{- end -}}
{{- $mib -}}
{{- end -}}
