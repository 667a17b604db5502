{{/*
Names, labels and the pieces every workload shares.
*/}}

{{- define "relais.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "relais.fullname" -}}
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

{{- define "relais.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the whole release (every component). */}}
{{- define "relais.selectorLabels" -}}
app.kubernetes.io/name: {{ include "relais.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "relais.labels" -}}
helm.sh/chart: {{ include "relais.chart" . }}
{{ include "relais.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: relais
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "edge"). */}}
{{- define "relais.componentSelectorLabels" -}}
{{ include "relais.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "relais.componentLabels" -}}
{{ include "relais.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The name of one component's objects: relais-edge, relais-session, ... */}}
{{- define "relais.componentName" -}}
{{- printf "%s-%s" (include "relais.fullname" .ctx) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The headless Services the kubernetes membership watches. */}}
{{- define "relais.sessionServiceName" -}}
{{- include "relais.componentName" (dict "ctx" . "component" "session") }}
{{- end }}

{{- define "relais.routerServiceName" -}}
{{- include "relais.componentName" (dict "ctx" . "component" "router") }}
{{- end }}

{{- define "relais.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "relais.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "relais.configName" -}}
{{- printf "%s-config" (include "relais.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "relais.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* True ("true") when the distributed pods read EndpointSlices. */}}
{{- define "relais.kubeMembership" -}}
{{- if and (eq .Values.deploymentMode "distributed") (eq .Values.config.cluster.membership "kubernetes") }}true{{ end }}
{{- end }}

{{/* The directory of one certificate's files under /etc/relais/tls. */}}
{{- define "relais.tls.dir" -}}
{{- regexReplaceAll "[^A-Za-z0-9.-]" (replace "*" "wildcard" .domain) "_" }}
{{- end }}

{{/* The Secret holding one certificate (given, or the one cert-manager writes). */}}
{{- define "relais.tls.secretName" -}}
{{- if .cert.secretName }}
{{- .cert.secretName }}
{{- else }}
{{- printf "%s-tls-%s" (include "relais.fullname" .ctx) (replace "*" "wildcard" .cert.domain) | lower | trunc 253 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The TCP address a listener binds: [::]:5222 */}}
{{- define "relais.listen" -}}
{{- printf "%s:%d" .ctx.Values.listenHost (int .port) }}
{{- end }}

{{/*
One TOML value from a values entry. Helm reads YAML numbers as float64, so integers are
printed with int64 (the schema allows only integers where config.rs has integers).
*/}}
{{- define "relais.toml.value" -}}
{{- if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- ternary "true" "false" . }}
{{- else if or (kindIs "float64" .) (kindIs "int" .) (kindIs "int64" .) }}
{{- int64 . }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}
{{- $items = append $items (include "relais.toml.value" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else }}
{{- fail (printf "cannot render %v as a TOML value" .) }}
{{- end }}
{{- end }}

{{/* key = value lines of one values map, in key order. */}}
{{- define "relais.toml.table" -}}
{{- range $k, $v := . }}
{{ $k }} = {{ include "relais.toml.value" $v }}
{{- end }}
{{- end }}

{{/*
relais.toml for one role: (dict "ctx" $ "role" "all|edge|session|router"). Only keys that exist
in services/relais/src/config.rs; the node id and the advertised gRPC address come from the
environment (RELAIS_NODE_ID, RELAIS_ADVERTISE), set from the downward API.
*/}}
{{- define "relais.config" -}}
{{- $v := .ctx.Values }}
{{- $c := $v.config }}
{{- $clients := or (eq .role "all") (eq .role "edge") -}}
# relais.toml for role `{{ .role }}`, rendered by the relais Helm chart from its values.
[server]
domains = {{ include "relais.toml.value" $c.domains }}
data_dir = {{ toJson $v.dataDir }}
roles = [{{ toJson .role }}]
{{- if $clients }}

[listen]
c2s = {{ include "relais.listen" (dict "ctx" .ctx "port" $v.ports.c2s) | toJson }}
c2s_tls = {{ include "relais.listen" (dict "ctx" .ctx "port" $v.ports.c2sTls) | toJson }}
{{- range $v.tls.certificates }}
{{- $dir := include "relais.tls.dir" . }}

[[tls.certificates]]
domain = {{ toJson .domain }}
cert = {{ printf "/etc/relais/tls/%s/tls.crt" $dir | toJson }}
key = {{ printf "/etc/relais/tls/%s/tls.key" $dir | toJson }}
{{- end }}
{{- with $c.limits }}

[limits]
{{- include "relais.toml.table" . }}
{{- end }}
{{- end }}
{{- if and (or (eq .role "all") (eq .role "session")) $c.session }}

[session]
{{- include "relais.toml.table" $c.session }}
{{- end }}

{{- if and (or (eq .role "all") (eq .role "session")) $v.scylla.hosts }}

[storage]
backend = "scylla"
hosts = {{ include "relais.toml.value" $v.scylla.hosts }}
keyspace = {{ toJson $v.scylla.keyspace }}
replication_factor = {{ int64 ($v.scylla.replicationFactor | default 3) }}
consistency = {{ toJson ($v.scylla.consistency | default "local_quorum") }}
{{- with $v.scylla.localDatacenter }}
local_datacenter = {{ toJson . }}
{{- end }}
{{- end }}

[log]
level = {{ toJson $c.log.level }}

[telemetry]
http = {{ include "relais.listen" (dict "ctx" .ctx "port" $v.ports.metrics) | toJson }}
{{- with $c.telemetry.otlp_endpoint }}
otlp_endpoint = {{ toJson . }}
{{- end }}
service_name = {{ toJson $c.telemetry.service_name }}
{{- if ne .role "all" }}
{{- $k := $c.cluster }}

[cluster]
redis_url = {{ toJson $v.redis.url }}
grpc = {{ include "relais.listen" (dict "ctx" .ctx "port" $v.ports.grpc) | toJson }}
membership = {{ toJson $k.membership }}
{{- if eq $k.membership "kubernetes" }}
{{- with $k.kube_namespace }}
kube_namespace = {{ toJson . }}
{{- end }}
kube_session_service = {{ include "relais.sessionServiceName" .ctx | toJson }}
kube_router_service = {{ include "relais.routerServiceName" .ctx | toJson }}
kube_port_name = "grpc"
{{- end }}
peer_routing = {{ toJson $k.peer_routing }}
heartbeat_ms = {{ int64 $k.heartbeat_ms }}
ttl_ms = {{ int64 $k.ttl_ms }}
{{- if and (eq .role "edge") $k.see_other_host }}
see_other_host = {{ toJson $k.see_other_host }}
{{- end }}
{{- if eq $v.clusterTls.mode "none" }}
insecure_private_network = true
{{- else }}

[cluster.tls]
ca = "/etc/relais/cluster-tls/ca.crt"
cert = "/etc/relais/cluster-tls/tls.crt"
key = "/etc/relais/cluster-tls/tls.key"
server_name = {{ toJson $v.clusterTls.serverName }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret with the cluster CA and the certificate of role .role: (dict "ctx" $ "role" "edge"). */}}
{{- define "relais.clusterTls.secretName" -}}
{{- if eq .ctx.Values.clusterTls.mode "existingSecret" -}}
{{ .ctx.Values.clusterTls.existingSecret }}
{{- else -}}
{{ include "relais.fullname" .ctx }}-cluster-tls-{{ .role }}
{{- end }}
{{- end }}

{{/* The ConfigMap key of one role's relais.toml. */}}
{{- define "relais.configKey" -}}
{{- if eq . "all" }}relais.toml{{ else }}{{ . }}.toml{{ end }}
{{- end }}

{{/* The roles this release runs. */}}
{{- define "relais.roles" -}}
{{- if eq .Values.deploymentMode "monolithic" }}all{{ else }}edge session router{{ end }}
{{- end }}

{{/*
Pod-level pieces shared by every workload: (dict "ctx" $ "component" "edge" "role" "edge"
"values" .Values.edge).
*/}}
{{- define "relais.podMeta" -}}
labels:
  {{- include "relais.componentLabels" . | nindent 2 }}
  {{- with .values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include (print .ctx.Template.BasePath "/config.yaml") .ctx | sha256sum }}
  {{- with .ctx.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "relais.podSpec" -}}
{{- $v := .ctx.Values }}
{{- $clients := or (eq .role "all") (eq .role "edge") }}
{{- $grpc := or (eq .role "session") (eq .role "router") -}}
serviceAccountName: {{ include "relais.serviceAccountName" .ctx }}
automountServiceAccountToken: {{ ternary "true" "false" (eq (include "relais.kubeMembership" .ctx) "true") }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ int64 $v.drain.terminationGracePeriodSeconds }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: relais
    image: {{ include "relais.image" .ctx }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    args:
      - serve
      - --config
      - /etc/relais/relais.toml
      - --roles
      - {{ .role }}
    {{- if or (ne .role "all") .values.extraEnv }}
    env:
      {{- if ne .role "all" }}
      - name: POD_IP
        valueFrom:
          fieldRef:
            fieldPath: status.podIP
      - name: RELAIS_NODE_ID
        valueFrom:
          fieldRef:
            fieldPath: metadata.name
      {{- end }}
      {{- if $grpc }}
      - name: RELAIS_ADVERTISE
        value: {{ printf "$(POD_IP):%d" (int $v.ports.grpc) | quote }}
      {{- end }}
      {{- with .values.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- end }}
    ports:
      {{- if $clients }}
      - name: c2s
        containerPort: {{ int $v.ports.c2s }}
        protocol: TCP
      - name: c2s-tls
        containerPort: {{ int $v.ports.c2sTls }}
        protocol: TCP
      {{- end }}
      {{- if $grpc }}
      - name: grpc
        containerPort: {{ int $v.ports.grpc }}
        protocol: TCP
      {{- end }}
      - name: http-metrics
        containerPort: {{ int $v.ports.metrics }}
        protocol: TCP
    livenessProbe:
      httpGet:
        path: /healthz
        port: http-metrics
      {{- toYaml $v.probes.liveness | nindent 6 }}
    readinessProbe:
      httpGet:
        path: /readyz
        port: http-metrics
      {{- toYaml $v.probes.readiness | nindent 6 }}
    lifecycle:
      # Endpoints are removed while this sleeps; then SIGTERM makes the edge close streams
      # (see-other-host or system-shutdown) and flush.
      preStop:
        {{- if $v.drain.sleepAction }}
        sleep:
          seconds: {{ int64 $v.drain.preStopSleepSeconds }}
        {{- else }}
        exec:
          command: ["sleep", {{ int64 $v.drain.preStopSleepSeconds | toString | quote }}]
        {{- end }}
    securityContext:
      {{- toYaml $v.securityContext | nindent 6 }}
    resources:
      {{- toYaml .values.resources | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/relais
        readOnly: true
      - name: data
        mountPath: {{ $v.dataDir }}
volumes:
  # relais.toml and, for client-facing roles, one directory of certificate files per domain.
  - name: config
    projected:
      defaultMode: 288 # 0440: readable by the pod's fsGroup only
      sources:
        {{- if eq $v.configStorageType "Secret" }}
        - secret:
            name: {{ include "relais.configName" .ctx }}
            items:
              - key: {{ include "relais.configKey" .role }}
                path: relais.toml
        {{- else }}
        - configMap:
            name: {{ include "relais.configName" .ctx }}
            items:
              - key: {{ include "relais.configKey" .role }}
                path: relais.toml
        {{- end }}
        {{- if $clients }}
        {{- range $v.tls.certificates }}
        {{- $dir := include "relais.tls.dir" . }}
        - secret:
            name: {{ include "relais.tls.secretName" (dict "ctx" $.ctx "cert" .) }}
            items:
              - key: tls.crt
                path: tls/{{ $dir }}/tls.crt
              - key: tls.key
                path: tls/{{ $dir }}/tls.key
        {{- end }}
        {{- end }}
        {{- if and (ne .role "all") (ne $v.clusterTls.mode "none") }}
        # The cluster CA and this role's certificate ([cluster.tls]).
        - secret:
            name: {{ include "relais.clusterTls.secretName" (dict "ctx" .ctx "role" .role) }}
            items:
              - key: ca.crt
                path: cluster-tls/ca.crt
              - key: tls.crt
                path: cluster-tls/tls.crt
              - key: tls.key
                path: cluster-tls/tls.key
        {{- end }}
  {{- if not .persistent }}
  - name: data
    {{- with .values.dataSizeLimit }}
    emptyDir:
      sizeLimit: {{ . }}
    {{- else }}
    emptyDir: {}
    {{- end }}
  {{- end }}
{{- end }}

{{/* volumeClaimTemplates for the data directory of a StatefulSet. */}}
{{- define "relais.dataClaim" -}}
- metadata:
    name: data
    labels:
      {{- include "relais.componentSelectorLabels" . | nindent 6 }}
  spec:
    accessModes:
      {{- toYaml .persistence.accessModes | nindent 6 }}
    {{- with .persistence.storageClass }}
    storageClassName: {{ if eq . "-" }}""{{ else }}{{ . }}{{ end }}
    {{- end }}
    resources:
      requests:
        storage: {{ .persistence.size }}
{{- end }}

{{/*
The client Service (monolithic and edge): (dict "ctx" $ "component" "edge" "service"
.Values.edge.service), with an optional "name".
*/}}
{{- define "relais.clientService" -}}
{{- $v := .ctx.Values }}
{{- $s := .service }}
apiVersion: v1
kind: Service
metadata:
  name: {{ .name | default (include "relais.componentName" .) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "relais.componentLabels" . | nindent 4 }}
  {{- with $s.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $s.type }}
  {{- if ne $s.type "ClusterIP" }}
  # Local keeps the client's address, which the per-IP login throttling needs.
  externalTrafficPolicy: {{ $s.externalTrafficPolicy }}
  {{- end }}
  {{- if eq $s.type "LoadBalancer" }}
  {{- with $s.loadBalancerClass }}
  loadBalancerClass: {{ . }}
  {{- end }}
  {{- with $s.loadBalancerSourceRanges }}
  loadBalancerSourceRanges:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- end }}
  selector:
    {{- include "relais.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: c2s
      port: {{ int $s.ports.c2s }}
      targetPort: c2s
      protocol: TCP
      {{- if and (ne $s.type "ClusterIP") $s.nodePorts.c2s }}
      nodePort: {{ int $s.nodePorts.c2s }}
      {{- end }}
    - name: c2s-tls
      port: {{ int $s.ports.c2sTls }}
      targetPort: c2s-tls
      protocol: TCP
      {{- if and (ne $s.type "ClusterIP") $s.nodePorts.c2sTls }}
      nodePort: {{ int $s.nodePorts.c2sTls }}
      {{- end }}
{{- end }}

{{/* A headless Service with the gRPC port, watched by the kubernetes membership. */}}
{{- define "relais.grpcService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "relais.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "relais.componentLabels" . | nindent 4 }}
spec:
  type: ClusterIP
  clusterIP: None
  # Only ready pods are members: a node joins once /readyz answers.
  publishNotReadyAddresses: false
  selector:
    {{- include "relais.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ int .ctx.Values.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
{{- end }}

{{/* A PodDisruptionBudget: (dict "ctx" $ "component" "edge" "pdb" .Values.edge.podDisruptionBudget). */}}
{{- define "relais.pdb" -}}
{{- if .pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "relais.componentName" . }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "relais.componentLabels" . | nindent 4 }}
spec:
  {{- if .pdb.minAvailable }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "relais.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
