{{/* The pod template, shared by the Deployment (no persistence) and the StatefulSet (persistence). */}}
{{- define "redis.podTemplate" -}}
metadata:
  labels:
    {{- include "redis.labels" . | nindent 4 }}
  annotations:
    # A new password (given in values) restarts Redis with it.
    checksum/auth: {{ .Values.auth | toJson | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: redis
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      env:
        - name: REDIS_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ include "redis.secretName" . }}
              key: redis-password
      # Kubernetes expands $(REDIS_PASSWORD), so the password never appears in the pod spec.
      args:
        - --requirepass
        - $(REDIS_PASSWORD)
        - --save
        - ""
        {{- if .Values.persistence.enabled }}
        # Every write goes to the append-only file on the claim, replayed on start.
        - --dir
        - /data
        - --appendonly
        - "yes"
        - --appendfsync
        - {{ .Values.persistence.appendfsync }}
        {{- else }}
        - --appendonly
        - "no"
        {{- end }}
        - --maxmemory
        - {{ include "redis.maxmemory" . | quote }}
        - --maxmemory-policy
        - {{ .Values.maxmemoryPolicy }}
      ports:
        - name: redis
          containerPort: 6379
          protocol: TCP
      readinessProbe:
        exec:
          command: ["sh", "-c", "REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli -h 127.0.0.1 ping | grep -q PONG"]
        periodSeconds: 10
        timeoutSeconds: 3
      livenessProbe:
        tcpSocket:
          port: redis
        periodSeconds: 20
        timeoutSeconds: 3
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: data
          mountPath: /data
  {{- if not .Values.persistence.enabled }}
  volumes:
    - name: data
      emptyDir:
        sizeLimit: 256Mi
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
