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
wre.workloadName names the StatefulSet. At most 52 characters: the
StatefulSet labels its pods controller-revision-hash=<name>-<hash of up to
10 characters>, and a label value stops at 63.
*/}}
{{- define "wre.workloadName" -}}
{{- include "wre.fullname" . | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "wre.headlessServiceName" -}}
{{- printf "%s-headless" (include "wre.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{/*
wre.stateClaimName is the claim of the single instance's store: the name
the StatefulSet gives shard 0's claim (<template>-<statefulset>-0). So
after shards: 1 -> N pod 0 mounts it and keeps the state, and back at
shards: 1 the Deployment mounts shard 0's claim again.
*/}}
{{- define "wre.stateClaimName" -}}
{{- printf "state-%s-0" (include "wre.workloadName" .) -}}
{{- end -}}

{{/*
wre.operatorAPI is "true" when the prometheus-operator objects of an API
version may render: the cluster serves it, or assumeOperatorCRDs says to
render them anyway. Called with (list . "monitoring.coreos.com/v1").
*/}}
{{- define "wre.operatorAPI" -}}
{{- $root := index . 0 -}}
{{- if or $root.Values.assumeOperatorCRDs ($root.Capabilities.APIVersions.Has (index . 1)) -}}true{{- end -}}
{{- end -}}

{{/*
Memory sizing: the one place its figures live. Measured (README
"Performance"): RSS after 10 scrapes with every run finished, 38 MiB at
10,000 runs and about 195 MiB at 100,000, that is about 1.8 KiB per run
above about 21 MiB; 2.5 KiB per run leaves room for runs still unfinished,
whose lines are not compressed yet. The request is that for
sizing.runsPerShard runs, rounded up; the limit leaves room for what the
measurement did not hold (a start loading the state store, a reload, a
burst of probes, the garbage collector's slack).
*/}}
{{- define "wre.memory.baseMiB" -}}21{{- end -}}
{{- define "wre.memory.perRunKiB" -}}2.5{{- end -}}
{{- define "wre.memory.limitFactor" -}}1.5{{- end -}}

{{- define "wre.memoryRequestMiB" -}}
{{- $perRunMiB := divf (include "wre.memory.perRunKiB" . | float64) 1024 -}}
{{- addf (include "wre.memory.baseMiB" . | float64) (mulf $perRunMiB .Values.sizing.runsPerShard) | ceil | int -}}
{{- end -}}

{{/*
wre.resources: the sized memory request and limit, with the resources
value merged over them.
*/}}
{{- define "wre.resources" -}}
{{- $request := include "wre.memoryRequestMiB" . | int -}}
{{- $limit := mulf $request (include "wre.memory.limitFactor" . | float64) | ceil | int -}}
{{- $sized := dict "requests" (dict "memory" (printf "%dMi" $request)) "limits" (dict "memory" (printf "%dMi" $limit)) -}}
{{- toYaml (mergeOverwrite $sized (deepCopy (.Values.resources | default dict))) -}}
{{- end -}}

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
{{- if and .Values.persistence.existingClaim (not .Values.persistence.enabled) -}}
{{- fail "\n\npersistence.existingClaim is set but persistence.enabled is false: the claim would be ignored and the store would live in an emptyDir. Set persistence.enabled=true to use the claim, or drop existingClaim." -}}
{{- end -}}
{{- if and (gt (int .Values.shards) 1) .Values.persistence.existingClaim -}}
{{- fail "\n\npersistence.existingClaim cannot be shared by several shards: each shard gets its own volume from the StatefulSet's volumeClaimTemplates (README \"Deployment\", \"Upgrades\": how to move the claim's data to shard 0)." -}}
{{- end -}}
{{- if and .Values.scrapeConfig.enabled (not .Values.scrapeConfig.httpSDConfigs) (not .Values.scrapeConfig.staticConfigs) -}}
{{- fail "\n\nscrapeConfig.enabled needs the runs to probe: set scrapeConfig.httpSDConfigs (e.g. [{url: http://run-registry/targets}]) or scrapeConfig.staticConfigs." -}}
{{- end -}}
{{- end -}}

{{/*
wre.config is the exporter's configuration: the config value, with
runs.ids_file pointing into the run list's ConfigMap unless probeOnly, and
with probeOnly probe.max_runs capped at sizing.runsPerShard (unless set),
so that the memory limit sized for that many runs holds.
*/}}
{{- define "wre.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- $runs := dig "runs" dict $cfg -}}
{{- if .Values.probeOnly -}}
{{- $probe := dig "probe" dict $cfg -}}
{{- if not (hasKey $probe "max_runs") -}}
{{- $_ := set $probe "max_runs" (int .Values.sizing.runsPerShard) -}}
{{- end -}}
{{- $_ := set $cfg "probe" $probe -}}
{{- else -}}
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
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- include "wre.resources" . | nindent 8 }}
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
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
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
        claimName: {{ .Values.persistence.existingClaim | default (include "wre.stateClaimName" .) }}
    {{- else if not .Values.persistence.enabled }}
    # No persistence: the store lives as long as the pod. It still spares
    # the API a re-fetch of every finished run after a container restart
    # (crash, OOM kill, failed liveness probe).
    - name: state
      emptyDir: {}
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
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
