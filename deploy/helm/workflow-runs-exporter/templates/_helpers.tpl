{{- define "wre.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wre.fullname" -}}
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

{{- define "wre.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wre.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
app.kubernetes.io/part-of is the ServiceMonitor's jobLabel: it stays
"workflow-runs-exporter" whatever nameOverride says, so the job label
matches the alert rules' job=~"workflow[-_]runs[-_]exporter".
*/}}
{{- define "wre.labels" -}}
{{ include "wre.selectorLabels" . }}
app.kubernetes.io/part-of: workflow-runs-exporter
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.extraLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "wre.secretName" -}}
{{- default (include "wre.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "wre.runsConfigMapName" -}}
{{- printf "%s-runs" (include "wre.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wre.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wre.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wre.stateDir" -}}/var/lib/workflow_runs_exporter{{- end -}}

{{/*
wre.validate fails the install on values that would render a pod that
cannot work. Every workload template includes it.
*/}}
{{- define "wre.validate" -}}
{{- if and (not .Values.token) (not .Values.existingSecret) -}}
{{- fail "\n\nThe exporter needs the API token: set token (the chart creates a Secret) or existingSecret (the name of a Secret holding it under secretKey).\n  helm install wre ./workflow-runs-exporter --set-file token=./token\n  kubectl create secret generic workflow-api-token --from-file=token=./token && helm install wre ./workflow-runs-exporter --set existingSecret=workflow-api-token" -}}
{{- end -}}
{{- if and .Values.token .Values.existingSecret -}}
{{- fail "\n\nSet token or existingSecret, not both." -}}
{{- end -}}
{{- if and (not .Values.probeOnly) (not .Values.runIDs) (not (dig "runs" "ids" nil (.Values.config | default dict))) -}}
{{- fail "\n\nThe run list is empty: list the run IDs to watch in runIDs, or set probeOnly: true to have Prometheus scrape /probe?run_id=<id> for each run (see the chart's NOTES and the README's Deployment section)." -}}
{{- end -}}
{{- if and .Values.probeOnly .Values.runIDs -}}
{{- fail "\n\nprobeOnly: true and runIDs exclude each other: with probeOnly the runs come from Prometheus' /probe targets." -}}
{{- end -}}
{{- if lt (int .Values.shards) 1 -}}
{{- fail "\n\nshards must be 1 or more." -}}
{{- end -}}
{{- if and (gt (int .Values.shards) 1) .Values.persistence.existingClaim -}}
{{- fail "\n\npersistence.existingClaim cannot be shared by several shards: each shard gets its own volume from the StatefulSet's volumeClaimTemplates." -}}
{{- end -}}
{{- end -}}

{{/*
wre.config is the exporter's configuration: the config value, with
runs.ids_file pointing into the run list's ConfigMap unless probeOnly.
*/}}
{{- define "wre.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $runs := dig "runs" dict $cfg -}}
{{- if not .Values.probeOnly -}}
{{- $_ := set $runs "ids_file" "/etc/workflow_runs_exporter/runs/run_ids.txt" -}}
{{- end -}}
{{- $_ := set $cfg "runs" $runs -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
wre.podTemplate is the pod of the Deployment (shards: 1) and of the
StatefulSet (shards > 1).
*/}}
{{- define "wre.podTemplate" -}}
metadata:
  labels:
    {{- include "wre.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Roll the pod when the configuration changes. The run list has its
    # own ConfigMap outside this checksum: the exporter re-reads it every
    # 5 s, so adding a run restarts nothing.
    checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "wre.serviceAccountName" . }}
  # The exporter talks to no Kubernetes API.
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: exporter
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - --config.file=/etc/workflow_runs_exporter/config.yml
        - --storage.path={{ include "wre.stateDir" . }}
        - --log.level={{ .Values.logLevel }}
        {{- if gt (int .Values.shards) 1 }}
        - --shard.count={{ int .Values.shards }}
        - --shard.from-hostname
        {{- end }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      ports:
        - name: http-metrics
          containerPort: 10025
          protocol: TCP
      livenessProbe:
        httpGet:
          path: /-/healthy
          port: http-metrics
        periodSeconds: 10
      readinessProbe:
        httpGet:
          path: /-/ready
          port: http-metrics
        periodSeconds: 5
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: config
          mountPath: /etc/workflow_runs_exporter
          readOnly: true
        # A whole-directory mount, not subPath, so a rotated token
        # reaches the pod; the exporter reads it on every request.
        - name: token
          mountPath: /run/secrets/workflow_runs_exporter
          readOnly: true
        - name: state
          mountPath: {{ include "wre.stateDir" . }}
  volumes:
    # One projected volume for the config and the run list: both are
    # updated in place when their ConfigMap changes (no subPath), and no
    # volume is mounted inside another, read-only, one.
    - name: config
      projected:
        sources:
          - configMap:
              name: {{ include "wre.fullname" . }}
              items:
                - key: config.yml
                  path: config.yml
          {{- if not .Values.probeOnly }}
          - configMap:
              name: {{ include "wre.runsConfigMapName" . }}
              items:
                - key: run_ids.txt
                  path: runs/run_ids.txt
          {{- end }}
    - name: token
      secret:
        secretName: {{ include "wre.secretName" . }}
        items:
          - key: {{ .Values.secretKey }}
            path: token
        # 0440 and not 0444: only the owner (root) and the group may read
        # the token. With fsGroup set (podSecurityContext) the kubelet
        # gives the file to that group, so the exporter (uid 65532, in
        # group 65532) reads it; without fsGroup the file is root:root and
        # the exporter exits with "permission denied". A test computes
        # this from the rendered pod.
        defaultMode: 0440
    {{- if and .Values.persistence.enabled (eq (int .Values.shards) 1) }}
    - name: state
      persistentVolumeClaim:
        claimName: {{ .Values.persistence.existingClaim | default (printf "%s-state" (include "wre.fullname" .)) }}
    {{- else if not .Values.persistence.enabled }}
    # No persistence: the store lives as long as the pod. It still spares
    # the API a re-fetch of every finished run after a container restart
    # (crash, OOM kill, failed liveness probe).
    - name: state
      emptyDir: {}
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
