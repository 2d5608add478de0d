{{/* One Celery worker Deployment. Call with a dict:
     ctx, component, image ("api" | "worker"), args, replicas (omitted when an autoscaler owns them),
     env (list), nodeSelector, tolerations, affinity, podAnnotations, resources, mounts, volumes, strategy,
     grace (terminationGracePeriodSeconds; 60 when omitted), ready (true: a readiness probe on the model being loaded). */}}
{{- define "itsm-triage.workerDeployment" -}}
{{- $ := .ctx -}}
{{- $c := dict "ctx" $ "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "itsm-triage.componentName" $c }}
  labels:
    {{- include "itsm-triage.componentLabels" $c | nindent 4 }}
spec:
  {{- if hasKey . "replicas" }}
  replicas: {{ .replicas }}
  {{- end }}
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "itsm-triage.componentSelectorLabels" $c | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "itsm-triage.componentSelectorLabels" $c | nindent 8 }}
      annotations:
        {{- include "itsm-triage.checksums" $ | nindent 8 }}
        {{- with .podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "itsm-triage.podSpecCommon" $ | nindent 6 }}
      # On SIGTERM Celery stops taking tasks and finishes the ones it runs (acks_late: one killed first is redone,
      # but its work is lost): the grace lets a batch that has just started end.
      terminationGracePeriodSeconds: {{ .grace | default 60 | int }}
      containers:
        - name: {{ .component }}
          image: {{ include "itsm-triage.image" (dict "ctx" $ "which" .image) }}
          imagePullPolicy: {{ (index $.Values.image .image).pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          workingDir: {{ $.Values.config.var_dir }}
          {{- with $.Values.config.worker.metrics_port }}
          ports:
            - name: metrics
              containerPort: {{ . }}
              protocol: TCP
          {{- end }}
          {{- include "itsm-triage.envFrom" $ | nindent 10 }}
          env:
            {{- include "itsm-triage.runtimeEnv" $ | nindent 12 }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "itsm-triage.workerProbes" (dict "ctx" $ "ready" .ready) | nindent 10 }}
          securityContext:
            {{- toYaml $.Values.containerSecurityContext | nindent 12 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          volumeMounts:
            {{- include "itsm-triage.scratchMounts" $ | nindent 12 }}
            {{- with .mounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "itsm-triage.scratchVolumes" $ | nindent 8 }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with .nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* A PodDisruptionBudget for one component. */}}
{{- define "itsm-triage.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "itsm-triage.componentName" . }}
  labels:
    {{- include "itsm-triage.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .maxUnavailable }}
  selector:
    matchLabels:
      {{- include "itsm-triage.componentSelectorLabels" . | nindent 6 }}
{{- end }}
