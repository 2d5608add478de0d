{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "itsm-triage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name shared by every object. */}}
{{- define "itsm-triage.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>. */}}
{{- define "itsm-triage.componentName" -}}
{{- printf "%s-%s" (include "itsm-triage.fullname" .ctx | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "itsm-triage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "itsm-triage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "itsm-triage.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "itsm-triage.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "api"). */}}
{{- define "itsm-triage.componentSelectorLabels" -}}
{{ include "itsm-triage.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "itsm-triage.componentLabels" -}}
{{ include "itsm-triage.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "itsm-triage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "itsm-triage.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret every pod reads credentials from: the operator's existingSecret or the chart's own. */}}
{{- define "itsm-triage.secretName" -}}
{{- default (include "itsm-triage.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "itsm-triage.image" -}}
{{- $img := index .ctx.Values.image .which -}}
{{- printf "%s:%s" $img.repository (default .ctx.Chart.AppVersion $img.tag) }}
{{- end }}

{{/* One settings value as an environment string: strings verbatim, everything else (numbers, booleans,
     maps, lists) as JSON, which pydantic-settings parses; toJson also keeps 1048576 from becoming 1.048576e+06. */}}
{{- define "itsm-triage.envValue" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* Settings groups (nested BaseModels): their fields become ITSM_<GROUP>__<FIELD>; any other map is a
     dict-valued setting (policy) and goes whole as JSON. */}}
{{- define "itsm-triage.settingsGroups" -}}
jira servicenow model api worker review log kb privacy learning
{{- end }}

{{/* Flatten a values tree (config or secrets) into ITSM_* variables, as YAML; nulls and empty strings
     are left out so the service default applies. Call with (dict "tree" .Values.config). */}}
{{- define "itsm-triage.flattenSettings" -}}
{{- $groups := splitList " " (include "itsm-triage.settingsGroups" .) -}}
{{- $env := dict -}}
{{- range $key, $val := .tree -}}
{{- if and (kindIs "map" $val) (has $key $groups) -}}
{{- range $field, $v := $val -}}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v ""))) -}}
{{- $_ := set $env (printf "ITSM_%s__%s" (upper $key) (upper $field)) (include "itsm-triage.envValue" $v) -}}
{{- end -}}
{{- end -}}
{{- else if not (or (kindIs "invalid" $val) (and (kindIs "string" $val) (eq $val ""))) -}}
{{- $_ := set $env (printf "ITSM_%s" (upper $key)) (include "itsm-triage.envValue" $val) -}}
{{- end -}}
{{- end -}}
{{- toYaml $env -}}
{{- end }}

{{/* Plain settings (ConfigMap data). */}}
{{- define "itsm-triage.configEnv" -}}
{{- include "itsm-triage.flattenSettings" (dict "tree" .Values.config) }}
{{- end }}

{{/* Credentials (Secret data before base64). The review session secret is generated once and then kept:
     lookup reads the live Secret on upgrade (it is empty under `helm template`). */}}
{{- define "itsm-triage.secretEnv" -}}
{{- $env := include "itsm-triage.flattenSettings" (dict "tree" .Values.secrets) | fromYaml -}}
{{- if not (hasKey $env "ITSM_REVIEW__SESSION_SECRET") -}}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "itsm-triage.fullname" .) -}}
{{- $kept := "" -}}
{{- if $live -}}{{- $kept = index ($live.data | default dict) "ITSM_REVIEW__SESSION_SECRET" | default "" -}}{{- end -}}
{{- if $kept -}}
{{- $_ := set $env "ITSM_REVIEW__SESSION_SECRET" (b64dec $kept) -}}
{{- else -}}
{{- $_ := set $env "ITSM_REVIEW__SESSION_SECRET" (randAlphaNum 48) -}}
{{- end -}}
{{- end -}}
{{- toYaml $env -}}
{{- end }}

{{/* Pod-level settings shared by every workload. */}}
{{- define "itsm-triage.podSpecCommon" -}}
serviceAccountName: {{ include "itsm-triage.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Settings reach every container the same way: the ConfigMap, then the Secret. */}}
{{- define "itsm-triage.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "itsm-triage.fullname" . }}
  - secretRef:
      name: {{ include "itsm-triage.secretName" . }}
{{- end }}

{{/* Variables that keep libraries off the read-only root filesystem. */}}
{{- define "itsm-triage.runtimeEnv" -}}
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: XDG_CACHE_HOME
  value: /tmp/.cache
{{- end }}

{{/* Writable scratch space: /tmp and config.var_dir (the working directory, so Celery beat's schedule file
     lands there too). */}}
{{- define "itsm-triage.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: var
  mountPath: {{ .Values.config.var_dir }}
{{- end }}

{{- define "itsm-triage.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.tmpSizeLimit }}
- name: var
  emptyDir:
    sizeLimit: {{ .Values.scratch.varSizeLimit }}
{{- end }}

{{/* Restart pods when their settings change. */}}
{{- define "itsm-triage.checksums" -}}
checksum/config: {{ include "itsm-triage.configEnv" . | sha256sum }}
{{- if not .Values.existingSecret }}
checksum/secret: {{ include "itsm-triage.flattenSettings" (dict "tree" .Values.secrets) | sha256sum }}
{{- end }}
{{- end }}

{{/* Worker liveness: the heartbeat file the worker's main process touches must be fresh. */}}
{{- define "itsm-triage.workerHeartbeatCheck" -}}
exec:
  command:
    - python
    - -c
    - {{ printf "import os, sys, time; p = %s; sys.exit(0 if os.path.exists(p) and time.time() - os.stat(p).st_mtime < %d else 1)" (.Values.workerHealth.heartbeatFile | squote) (int .Values.workerHealth.maxAgeSeconds) | quote }}
{{- end }}

{{/* Ready once a pool process has loaded the model (workers/app.py touches the file after loading, and the
     worker removes it as it starts): a rolling update keeps the old pods until the new ones can serve. */}}
{{- define "itsm-triage.workerReadyCheck" -}}
exec:
  command:
    - python
    - -c
    - {{ printf "import os, sys; sys.exit(0 if os.path.exists(%s) else 1)" (.Values.workerHealth.readyFile | squote) | quote }}
{{- end }}

{{/* Call with (dict "ctx" $ "ready" bool): startup and liveness on the heartbeat, readiness on the model (model
     pools only). */}}
{{- define "itsm-triage.workerProbes" -}}
{{- $ := .ctx -}}
startupProbe:
  {{- include "itsm-triage.workerHeartbeatCheck" $ | nindent 2 }}
  periodSeconds: {{ $.Values.workerHealth.startup.periodSeconds }}
  failureThreshold: {{ $.Values.workerHealth.startup.failureThreshold }}
  timeoutSeconds: {{ $.Values.workerHealth.liveness.timeoutSeconds }}
livenessProbe:
  {{- include "itsm-triage.workerHeartbeatCheck" $ | nindent 2 }}
  periodSeconds: {{ $.Values.workerHealth.liveness.periodSeconds }}
  failureThreshold: {{ $.Values.workerHealth.liveness.failureThreshold }}
  timeoutSeconds: {{ $.Values.workerHealth.liveness.timeoutSeconds }}
{{- if .ready }}
readinessProbe:
  {{- include "itsm-triage.workerReadyCheck" $ | nindent 2 }}
  periodSeconds: {{ $.Values.workerHealth.readiness.periodSeconds }}
  failureThreshold: {{ $.Values.workerHealth.readiness.failureThreshold }}
  timeoutSeconds: {{ $.Values.workerHealth.liveness.timeoutSeconds }}
{{- end }}
{{- end }}

{{/* Refuse values that would deploy a broken service. */}}
{{- define "itsm-triage.validate" -}}
{{- if not .Values.existingSecret }}
{{- if not .Values.secrets.database_url }}
{{- fail "secrets.database_url is required (PostgreSQL URL), or set existingSecret with an ITSM_DATABASE_URL key" }}
{{- end }}
{{- if not .Values.secrets.broker_url }}
{{- fail "secrets.broker_url is required (Redis URL), or set existingSecret with an ITSM_BROKER_URL key" }}
{{- end }}
{{- end }}
{{- if not (hasPrefix "/" (toString .Values.config.var_dir)) }}
{{- fail "config.var_dir must be an absolute path: it is the mount point of a writable emptyDir" }}
{{- end }}
{{- if .Values.config.api.migrate_on_start }}
{{- fail "config.api.migrate_on_start must stay false in the chart: the pre-install/pre-upgrade Job migrates, and replicas racing Alembic would not" }}
{{- end }}
{{- with .Values.config.learning.schedule }}
{{- if ne (len (regexSplit "\\s+" (trim .) -1)) 5 }}
{{- fail (printf "config.learning.schedule %q is not a crontab: five fields, minute hour day-of-month month day-of-week (UTC), e.g. \"0 3 * * 6\"" .) }}
{{- end }}
{{- if eq (include "itsm-triage.learnPoolEnabled" $) "" }}
{{- fail "config.learning.schedule is set but learnWorker.enabled is false: nothing would consume the `learn` queue, so every scheduled retrain would expire unrun. Set learnWorker.enabled to true (or null: follow the schedule), or unset config.learning.schedule" }}
{{- end }}
{{- if not $.Values.sweeper.enabled }}
{{- fail "config.learning.schedule needs sweeper.enabled: the sweeper's Celery beat is what enqueues the scheduled retrains" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether the retrain pool (learnWorker) runs: "true" or empty. learnWorker.enabled true or false decides; null
     (the default) follows config.learning.schedule, so a schedule brings its consumer along. */}}
{{- define "itsm-triage.learnPoolEnabled" -}}
{{- $enabled := .Values.learnWorker.enabled -}}
{{- if kindIs "bool" $enabled -}}
{{- if $enabled }}true{{ end -}}
{{- else if .Values.config.learning.schedule -}}
true
{{- end -}}
{{- end }}
