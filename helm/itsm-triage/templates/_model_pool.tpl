{{/* The model-worker pools share one shape of values and one template: the triage pool (`modelWorker`,
     component model-worker: labels and the internal note), the draft pool (`draftWorker`, component
     draft-worker: reply suggestions) and the retrain pool (`learnWorker`, component learn-worker: scheduled
     retrains). All load the model. Call each define with
     (dict "ctx" $ "key" "modelWorker" "component" "model-worker"), plus "concurrency" to fix the worker processes
     (the retrain pool: 1) instead of one per GPU. `hpa` and `podDisruptionBudget` are optional (the retrain pool
     has neither). */}}

{{/* The Celery queues a pool consumes, comma-separated: the draft queue goes to the draft pool while it is on,
     otherwise the triage pool serves it too. */}}
{{- define "itsm-triage.poolQueues" -}}
{{- if eq .key "learnWorker" -}}
learn
{{- else if eq .key "draftWorker" -}}
draft
{{- else if .ctx.Values.draftWorker.enabled -}}
triage
{{- else -}}
triage,draft
{{- end -}}
{{- end }}

{{/* The Redis lists KEDA watches for a pool, one per queue it consumes (Celery's Redis transport keeps each queue
     as a list named after it; `keda.listName` of the pool that owns the queue). */}}
{{- define "itsm-triage.poolLists" -}}
{{- $ := .ctx -}}
{{- $lists := list -}}
{{- range splitList "," (include "itsm-triage.poolQueues" .) -}}
{{- $owner := get (dict "triage" "modelWorker" "draft" "draftWorker" "learn" "learnWorker") . -}}
{{- $lists = append $lists (index $.Values $owner).keda.listName -}}
{{- end -}}
{{- join "," $lists -}}
{{- end }}

{{/* A pool's Deployment (and PodDisruptionBudget). */}}
{{- define "itsm-triage.modelPool" -}}
{{- $ := .ctx -}}
{{- $key := .key -}}
{{- $component := .component -}}
{{- $mw := index $.Values $key -}}
{{- $hpa := dig "hpa" "enabled" false $mw -}}
{{- if and $mw.keda.enabled $hpa }}
{{- fail (printf "%s.keda.enabled and %s.hpa.enabled are mutually exclusive: KEDA creates its own HPA" $key $key) }}
{{- end }}
{{- if and $mw.modelCache.enabled (not $mw.modelCache.existingClaim) }}
{{- fail (printf "%s.modelCache.enabled needs %s.modelCache.existingClaim (a pre-loaded volume: workers never download at run time)" $key $key) }}
{{- end }}
{{- $env := list
      (dict "name" "HF_HOME" "value" "/tmp/huggingface")
      (dict "name" "HF_HUB_OFFLINE" "value" "1")
      (dict "name" "TRANSFORMERS_OFFLINE" "value" "1")
      (dict "name" "MPLCONFIGDIR" "value" "/tmp/matplotlib") }}
{{- $nodeSelector := $mw.nodeSelector }}
{{- $tolerations := $mw.tolerations }}
{{- $resources := deepCopy $mw.resources }}
{{- if $mw.gpu.enabled }}
{{- /* One worker process per GPU (the lead's contract for the model queues), unless the caller fixes it. */}}
{{- $env = append $env (dict "name" "ITSM_WORKER__CONCURRENCY" "value" (.concurrency | default $mw.gpu.count | int | toString)) }}
{{- $nodeSelector = merge (deepCopy $mw.nodeSelector) $mw.gpu.nodeSelector }}
{{- $tolerations = concat $mw.tolerations $mw.gpu.tolerations }}
{{- $limits := merge (dict $mw.gpu.resourceName ($mw.gpu.count | int)) ($resources.limits | default dict) }}
{{- $requests := merge (dict $mw.gpu.resourceName ($mw.gpu.count | int)) ($resources.requests | default dict) }}
{{- $_ := set $resources "limits" $limits }}
{{- $_ := set $resources "requests" $requests }}
{{- else }}
{{- $env = append $env (dict "name" "ITSM_WORKER__CONCURRENCY" "value" (.concurrency | default $mw.cpuConcurrency | int | toString)) }}
{{- $env = append $env (dict "name" "ITSM_MODEL__DEVICE" "value" "cpu") }}
{{- end }}
{{- $mounts := list }}
{{- $volumes := list }}
{{- if $mw.modelCache.enabled }}
{{- $env = append $env (dict "name" "ITSM_MODEL__CACHE_DIR" "value" $mw.modelCache.mountPath) }}
{{- $mounts = append $mounts (dict "name" "model-cache" "mountPath" $mw.modelCache.mountPath "readOnly" true) }}
{{- $volumes = append $volumes (dict "name" "model-cache" "persistentVolumeClaim" (dict "claimName" $mw.modelCache.existingClaim "readOnly" true)) }}
{{- end }}
{{- /* Grace after SIGTERM: enough for the task the pool runs (values.yaml: terminationGracePeriodSeconds). */}}
{{- $grace := 60 }}
{{- range splitList "," (include "itsm-triage.poolQueues" .) }}
{{- $need := 60 }}
{{- if eq . "triage" }}{{ $need = add 60 (div (int $.Values.config.worker.task_time_limit_s) 2) }}{{ end }}
{{- if eq . "draft" }}{{ $need = add 60 (div (int $.Values.config.worker.draft_time_limit_s) 2) }}{{ end }}
{{- if eq . "learn" }}{{ $need = add 300 (mulf $.Values.config.learning.time_budget_min 60 | int) }}{{ end }}
{{- $grace = max $grace $need }}
{{- end }}
{{- if not (kindIs "invalid" $mw.terminationGracePeriodSeconds) }}{{ $grace = $mw.terminationGracePeriodSeconds }}{{ end }}
{{- $args := dict
      "ctx" $ "component" $component "image" "worker" "grace" $grace "ready" (ne $key "learnWorker")
      "args" (list "worker" "--queues" (include "itsm-triage.poolQueues" .))
      "env" $env "resources" $resources "mounts" $mounts "volumes" $volumes
      "nodeSelector" $nodeSelector "tolerations" $tolerations "affinity" $mw.affinity
      "podAnnotations" $mw.podAnnotations }}
{{- if not (or $mw.keda.enabled $hpa) }}
{{- $_ := set $args "replicas" $mw.replicas }}
{{- end }}
{{ include "itsm-triage.workerDeployment" $args }}
{{- if dig "podDisruptionBudget" "enabled" false $mw }}
---
{{ include "itsm-triage.pdb" (dict "ctx" $ "component" $component "maxUnavailable" $mw.podDisruptionBudget.maxUnavailable) }}
{{- end }}
{{- end }}

{{/* A pool's autoscaler: a KEDA ScaledObject on the length of its own Redis list(s) (with a TriggerAuthentication
     when Redis has a password), or a CPU HorizontalPodAutoscaler, or nothing. */}}
{{- define "itsm-triage.modelPoolScaling" -}}
{{- $ := .ctx -}}
{{- $mw := index $.Values .key -}}
{{- $c := dict "ctx" $ "component" .component }}
{{- if $mw.keda.enabled }}
{{- $k := $mw.keda }}
{{- $auth := and $k.redis.passwordSecret.name $k.redis.passwordSecret.key }}
{{- if $auth }}
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: {{ include "itsm-triage.componentName" $c }}
  labels:
    {{- include "itsm-triage.componentLabels" $c | nindent 4 }}
spec:
  secretTargetRef:
    - parameter: password
      name: {{ $k.redis.passwordSecret.name }}
      key: {{ $k.redis.passwordSecret.key }}
---
{{- end }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "itsm-triage.componentName" $c }}
  labels:
    {{- include "itsm-triage.componentLabels" $c | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "itsm-triage.componentName" $c }}
  pollingInterval: {{ $k.pollingInterval }}
  cooldownPeriod: {{ $k.cooldownPeriod }}
  minReplicaCount: {{ $k.minReplicas }}
  maxReplicaCount: {{ $k.maxReplicas }}
  triggers:
    {{- /* One trigger per list: KEDA scales to the largest replica count any of them asks for. */}}
    {{- range splitList "," (include "itsm-triage.poolLists" .) }}
    - type: redis
      metadata:
        address: {{ $k.redis.address | quote }}
        listName: {{ . }}
        listLength: {{ $k.listLength | toString | quote }}
        activationListLength: {{ $k.activationListLength | toString | quote }}
        databaseIndex: {{ $k.redis.databaseIndex | toString | quote }}
        enableTLS: {{ $k.redis.enableTLS | toString | quote }}
      {{- if $auth }}
      authenticationRef:
        name: {{ include "itsm-triage.componentName" $c }}
      {{- end }}
    {{- end }}
{{- else if dig "hpa" "enabled" false $mw }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "itsm-triage.componentName" $c }}
  labels:
    {{- include "itsm-triage.componentLabels" $c | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "itsm-triage.componentName" $c }}
  minReplicas: {{ $mw.hpa.minReplicas }}
  maxReplicas: {{ $mw.hpa.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $mw.hpa.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}
