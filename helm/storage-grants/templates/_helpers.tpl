{{/* ===== names and labels ===== */}}

{{- define "storage-grants.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "storage-grants.fullname" -}}
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

{{- define "storage-grants.selectorLabels" -}}
app.kubernetes.io/name: {{ include "storage-grants.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "storage-grants.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "storage-grants.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: storage-grants
{{- end -}}

{{- define "storage-grants.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "storage-grants.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "storage-grants.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* ===== paths inside the pod ===== */}}

{{- define "storage-grants.configDir" -}}/etc/storage-grants/config{{- end -}}
{{- define "storage-grants.rulesDir" -}}/etc/storage-grants/rules{{- end -}}
{{- define "storage-grants.tlsDir" -}}/etc/storage-grants/tls{{- end -}}
{{- define "storage-grants.uploadKeysDir" -}}/etc/storage-grants/upload-keys{{- end -}}

{{- define "storage-grants.rulesConfigMap" -}}
{{- .Values.rules.existingConfigMap | default (printf "%s-rules" (include "storage-grants.fullname" .)) -}}
{{- end -}}

{{/* ===== derived facts ===== */}}

{{/* "true" when the gRPC port speaks TLS (mTLS, or server TLS when enabled). */}}
{{- define "storage-grants.grpcTls" -}}
{{- if or .Values.config.identity.mtls .Values.tls.server.enabled -}}true{{- end -}}
{{- end -}}

{{/* "true" when the gRPC listener is reachable from the network but speaks plaintext:
no TLS on the port and a listen host other than loopback. The service refuses that
unless told TLS is terminated in front of it (server.allow_plaintext): in a cluster,
a mesh sidecar. */}}
{{- define "storage-grants.grpcPlaintextOnNetwork" -}}
{{- $host := .Values.service.listenHost | default "0.0.0.0" -}}
{{- if and (not (include "storage-grants.grpcTls" .)) (not (has $host (list "127.0.0.1" "::1" "localhost"))) -}}true{{- end -}}
{{- end -}}

{{/* "true" when the pod needs its own API token: the JWT source reads the API
server's JWKS with it (jwks_token_file / jwks_ca_file under the service-account
mount), or the operator asked for it. */}}
{{- define "storage-grants.automountToken" -}}
{{- $sa := "/var/run/secrets/kubernetes.io/serviceaccount/" -}}
{{- $jwt := .Values.config.identity.jwt | default dict -}}
{{- if or .Values.serviceAccount.automountToken (hasPrefix $sa (toString ($jwt.jwks_token_file | default ""))) (hasPrefix $sa (toString ($jwt.jwks_ca_file | default ""))) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/* A duration of the service's config ("20s", "1m", "500ms", "2h", "1d" or a
number of seconds) in whole seconds, rounded up. */}}
{{- define "storage-grants.seconds" -}}
{{- $d := . -}}
{{- if kindIs "string" $d -}}
{{- $d = trim $d -}}
{{- if not (regexMatch "^[0-9]+ *(ms|s|m|h|d)?$" $d) -}}
{{- fail (printf "%q is not a duration; write e.g. 20s, 1m or 2h" $d) -}}
{{- end -}}
{{- $n := int64 (regexFind "^[0-9]+" $d) -}}
{{- $unit := trim (regexReplaceAll "^[0-9]+" $d "") -}}
{{- if eq $unit "ms" -}}{{ div (add $n 999) 1000 }}
{{- else if eq $unit "m" -}}{{ mul $n 60 }}
{{- else if eq $unit "h" -}}{{ mul $n 3600 }}
{{- else if eq $unit "d" -}}{{ mul $n 86400 }}
{{- else -}}{{ $n }}
{{- end -}}
{{- else -}}
{{- int64 $d -}}
{{- end -}}
{{- end -}}

{{- define "storage-grants.shutdownGraceSeconds" -}}
{{- /* Unset is the service's default, 20s; 0 is 0 (no drain), not unset. */ -}}
{{- $grace := .Values.config.server.shutdown_grace -}}
{{- include "storage-grants.seconds" (ternary "20s" $grace (kindIs "invalid" $grace)) -}}
{{- end -}}

{{- define "storage-grants.terminationGracePeriodSeconds" -}}
{{- $floor := add .Values.drain.preStopSleepSeconds (int64 (include "storage-grants.shutdownGraceSeconds" .)) -}}
{{- if .Values.drain.terminationGracePeriodSeconds -}}
{{- if le (int64 .Values.drain.terminationGracePeriodSeconds) $floor -}}
{{- fail (printf "drain.terminationGracePeriodSeconds (%v) must be longer than drain.preStopSleepSeconds + config.server.shutdown_grace (%d s), else the kubelet kills calls still draining" .Values.drain.terminationGracePeriodSeconds $floor) -}}
{{- end -}}
{{- int64 .Values.drain.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add $floor 5 -}}
{{- end -}}
{{- end -}}

{{/* HOST:PORT for a listener of the pod: (dict "root" $ "port" N); an IPv6 host
goes in brackets. */}}
{{- define "storage-grants.listenAddr" -}}
{{- $host := .root.Values.service.listenHost | default "0.0.0.0" -}}
{{- if contains ":" $host -}}{{- $host = printf "[%s]" $host -}}{{- end -}}
{{- printf "%s:%v" $host .port -}}
{{- end -}}

{{/* ===== TOML rendering ===== */}}

{{/* One TOML value: a string, a boolean, a number or an array of those. Strings go
through JSON encoding, whose escapes are all valid in a TOML basic string. */}}
{{- define "storage-grants.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}{{ toJson $v }}
{{- else if kindIs "bool" $v -}}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (float64 (int64 $v)) (float64 $v) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) -}}{{ $v }}
{{- else if kindIs "slice" $v -}}
{{- $items := list -}}
{{- range $v -}}{{- $items = append $items (include "storage-grants.tomlValue" .) -}}{{- end -}}
[{{ join ", " $items }}]
{{- else -}}
{{- fail (printf "cannot write %v (%s) as a TOML value" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* "key = value" lines of a flat map, in key order, skipping nulls. */}}
{{- define "storage-grants.tomlKeys" -}}
{{- range $k, $v := . -}}
{{- if not (kindIs "invalid" $v) }}
{{ $k }} = {{ include "storage-grants.tomlValue" $v }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The service's config.toml. Only what the values set is written: every other key
keeps the service's own default. */}}
{{- define "storage-grants.configToml" -}}
{{- $c := .Values.config -}}
{{- $id := $c.identity | default dict -}}
# config.toml of storage-grants, rendered by the Helm chart: edit the chart's values,
# not this file. Keys: the service's README, "Configuration".
listen = {{ include "storage-grants.listenAddr" (dict "root" . "port" .Values.service.grpcPort) | toJson }}
{{- if $c.log_format }}
log_format = {{ $c.log_format | toJson }}
{{- end }}

[storage]
{{- include "storage-grants.tomlKeys" ($c.storage | default dict) }}

[grants]
rules_file = {{ printf "%s/rules.toml" (include "storage-grants.rulesDir" .) | toJson }}
{{- include "storage-grants.tomlKeys" ($c.grants | default dict) }}

[identity]
{{- if .Values.devMode.enabled }}
# Static development tokens come from the Secret {{ .Values.devMode.existingSecret }}
# (STORAGE_GRANTS_IDENTITY__DEV_TOKENS), never from this file.
dev_mode = true
{{- end }}
{{- if $id.order }}
order = {{ include "storage-grants.tomlValue" $id.order }}
{{- end }}
{{- with $id.mtls }}

[identity.mtls]
ca_file = {{ printf "%s/%s" (include "storage-grants.tlsDir" $) $.Values.tls.caKey | toJson }}
cert_file = {{ printf "%s/%s" (include "storage-grants.tlsDir" $) $.Values.tls.certKey | toJson }}
key_file = {{ printf "%s/%s" (include "storage-grants.tlsDir" $) $.Values.tls.keyKey | toJson }}
{{- include "storage-grants.tomlKeys" . }}
{{- end }}
{{- with $id.jwt }}

[identity.jwt]
{{- include "storage-grants.tomlKeys" . }}
{{- end }}
{{- with $id.xfcc }}

[identity.xfcc]
{{- include "storage-grants.tomlKeys" . }}
{{- end }}

[server]
{{- include "storage-grants.tomlKeys" ($c.server | default dict) }}
{{- if include "storage-grants.grpcPlaintextOnNetwork" . }}
# No TLS on the gRPC port ({{ .Values.service.listenHost }}): tokens, URLs and credentials
# cross the pod network in clear text unless a mesh sidecar encrypts it. Set
# tls.server.enabled (or config.identity.mtls) to have the service terminate TLS.
allow_plaintext = true
{{- end }}
{{- if .Values.tls.server.enabled }}

[server.tls]
cert_file = {{ printf "%s/%s" (include "storage-grants.tlsDir" .) .Values.tls.certKey | toJson }}
key_file = {{ printf "%s/%s" (include "storage-grants.tlsDir" .) .Values.tls.keyKey | toJson }}
{{- with .Values.tls.server.reloadInterval }}
reload_interval = {{ . | toJson }}
{{- end }}
{{- with .Values.tls.server.handshakeTimeout }}
handshake_timeout = {{ . | toJson }}
{{- end }}
{{- end }}

[sts]
{{- include "storage-grants.tomlKeys" ($c.sts | default dict) }}
{{- with $c.limits }}

[limits]
{{- include "storage-grants.tomlKeys" . }}
{{- end }}
{{- if .Values.uploads.tokenKeys.existingSecret }}

[uploads]
# Keys of the multipart upload tokens, from the Secret {{ .Values.uploads.tokenKeys.existingSecret }}
# (one file per key, never in this file). The first signs, all verify.
{{- $files := list -}}
{{- range .Values.uploads.tokenKeys.keys -}}
{{- $files = append $files (printf "%s/%s" (include "storage-grants.uploadKeysDir" $) .) -}}
{{- end }}
token_key_files = {{ include "storage-grants.tomlValue" $files }}
{{- end }}
{{- if .Values.metrics.enabled }}

[metrics]
listen = {{ include "storage-grants.listenAddr" (dict "root" . "port" .Values.metrics.port) | toJson }}
{{- end }}
{{- $http := $c.http | default dict }}
{{- if .Values.http.enabled }}

[http]
listen = {{ include "storage-grants.listenAddr" (dict "root" . "port" .Values.http.port) | toJson }}
{{- include "storage-grants.tomlKeys" $http }}
{{- else if and ($c.server | default dict).grpc_web $http.allowed_origins }}

[http]
# No listen: the HTTP gateway stays off (http.enabled). gRPC-Web's CORS on the gRPC
# port takes its origins from here.
allowed_origins = {{ include "storage-grants.tomlValue" $http.allowed_origins }}
{{- end }}
{{- with $c.audit }}

[audit]
{{- include "storage-grants.tomlKeys" . }}
{{- end }}
{{ end -}}

{{/* The rules file. */}}
{{- define "storage-grants.rulesToml" -}}
# rules.toml of storage-grants, rendered by the Helm chart: edit the chart's values
# (rules.items). Reloaded by the service without a restart when it changes.
{{- range .Values.rules.items }}

[[rules]]
{{- include "storage-grants.tomlKeys" . }}
{{- end }}
{{ end -}}

{{/* ===== checks that the schema cannot express ===== */}}

{{- define "storage-grants.validate" -}}
{{- $v := .Values -}}
{{- $id := $v.config.identity | default dict -}}
{{- if $v.devMode.enabled -}}
{{- if not $v.devMode.iUnderstandDevTokensAreInsecure -}}
{{- fail "devMode.enabled=true makes the service accept static development tokens: shared secrets that never expire and name any caller the Secret says. Refused unless devMode.iUnderstandDevTokensAreInsecure=true is set as well. Never in production: use config.identity.jwt or mTLS." -}}
{{- end -}}
{{- if not $v.devMode.existingSecret -}}
{{- fail "devMode.enabled=true needs devMode.existingSecret: a Secret whose key dev_tokens holds the tokens as TOML ([{ token = \"...\", caller = \"dev:demo\" }]). The chart never writes tokens into a ConfigMap." -}}
{{- end -}}
{{- end -}}
{{- if or (hasKey $id "dev_tokens") (hasKey $id "dev_mode") -}}
{{- fail "config.identity.dev_tokens / dev_mode: development tokens can never be rendered into a ConfigMap; use devMode.enabled with devMode.existingSecret" -}}
{{- end -}}
{{- /* The root filesystem is read-only: an audit file off a writable mount would stop
the service at start (it opens the file), so the render says so first. */ -}}
{{- with ($v.config.audit | default dict).file -}}
{{- $file := . -}}
{{- $writable := false -}}
{{- range $v.extraVolumeMounts -}}
{{- if and (hasPrefix (printf "%s/" (trimSuffix "/" .mountPath)) $file) (not .readOnly) -}}{{- $writable = true -}}{{- end -}}
{{- end -}}
{{- if not $writable -}}
{{- fail (printf "config.audit.file %s is not on a writable volume: the pod's root filesystem is read-only. Mount one at its directory (or above) with extraVolumes and extraVolumeMounts, without readOnly" $file) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $v.config "uploads" -}}
{{- fail "config.uploads: the upload token keys are never written into a ConfigMap; put them in a Secret and set uploads.tokenKeys.existingSecret (and uploads.tokenKeys.keys)" -}}
{{- end -}}
{{- if and $v.uploads.tokenKeys.existingSecret (not $v.uploads.tokenKeys.keys) -}}
{{- fail "uploads.tokenKeys.existingSecret needs uploads.tokenKeys.keys: the Secret's keys that hold one token key each, e.g. [current] or [current, previous]" -}}
{{- end -}}
{{- if hasKey $v.config "listen" -}}{{- fail "config.listen is set by the chart from service.grpcPort" -}}{{- end -}}
{{- if hasKey $v.config "metrics" -}}{{- fail "config.metrics is set by the chart from metrics.enabled and metrics.port" -}}{{- end -}}
{{- $http := $v.config.http | default dict -}}
{{- if hasKey $http "listen" -}}{{- fail "config.http.listen is set by the chart from http.port (with http.enabled=true): set http.port instead" -}}{{- end -}}
{{- if not $v.http.enabled -}}
{{- /* Without the gateway nothing reads these keys, and a setting silently ignored
is worse than a refusal; allowed_origins alone is also read by gRPC-Web's CORS. */ -}}
{{- $unread := keys $http | sortAlpha -}}
{{- if ($v.config.server | default dict).grpc_web -}}{{- $unread = without $unread "allowed_origins" -}}{{- end -}}
{{- with $unread -}}
{{- fail (printf "config.http.%s: read by the HTTP gateway, which is off: set http.enabled=true to serve it (or remove these keys). config.http.allowed_origins alone is also read by gRPC-Web, with config.server.grpc_web=true" (join ", config.http." .)) -}}
{{- end -}}
{{- end -}}
{{- if hasKey ($v.config.grants | default dict) "rules_file" -}}{{- fail "config.grants.rules_file is set by the chart: put rules in rules.items or rules.existingConfigMap" -}}{{- end -}}
{{- with $id.mtls -}}
{{- if or (hasKey . "ca_file") (hasKey . "cert_file") (hasKey . "key_file") -}}
{{- fail "config.identity.mtls file paths are set by the chart: name the Secret in tls.existingSecret" -}}
{{- end -}}
{{- end -}}
{{- if and $id.mtls $v.tls.server.enabled -}}
{{- fail "tls.server.enabled and config.identity.mtls both put TLS on the gRPC port, which the service refuses: mTLS already serves the certificate of tls.existingSecret. Keep config.identity.mtls for client certificates, or tls.server.enabled alone for TLS without them." -}}
{{- end -}}
{{- /* Plaintext beyond the cluster: a LoadBalancer or NodePort Service in front of a
gRPC port without TLS would carry tokens, URLs and credentials in clear text over
networks no mesh encrypts. */ -}}
{{- if and (include "storage-grants.grpcPlaintextOnNetwork" .) (has $v.service.type (list "LoadBalancer" "NodePort")) (not $v.service.tlsTerminatedInFront) -}}
{{- fail (printf "service.type=%s exposes the gRPC port beyond the cluster without TLS: tokens, presigned URLs and credentials would cross the network in clear text. Set tls.server.enabled (or config.identity.mtls), or, when the load balancer itself terminates TLS, service.tlsTerminatedInFront=true." $v.service.type) -}}
{{- end -}}
{{- if and (or $id.mtls $v.tls.server.enabled) (not $v.tls.existingSecret) -}}
{{- fail "config.identity.mtls and tls.server.enabled need tls.existingSecret: a Secret with the server certificate, its key and (for mTLS) the client CA. TLS material is never inlined in values." -}}
{{- end -}}
{{- if and (eq $v.probes.type "grpc") (include "storage-grants.grpcTls" .) -}}
{{- fail "probes.type=grpc cannot work while the gRPC port speaks TLS (config.identity.mtls or tls.server.enabled): Kubernetes gRPC probes connect in plaintext only. Set probes.type=http (GET /readyz and /livez on the plaintext metrics port; readiness follows the bucket check), tcpSocket (the port accepts connections; readiness then does not follow the bucket check) or exec with probes.execCommand (e.g. grpc_health_probe -tls in an image that ships it)." -}}
{{- end -}}
{{- if and (eq $v.probes.type "http") (not $v.metrics.enabled) -}}
{{- fail "probes.type=http asks GET /readyz and /livez on the metrics port: set metrics.enabled" -}}
{{- end -}}
{{- if and (eq $v.probes.type "exec") (not $v.probes.execCommand) -}}
{{- fail "probes.type=exec needs probes.execCommand" -}}
{{- end -}}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- if and $v.metrics.prometheusRule.enabled (not $v.metrics.enabled) -}}
{{- fail "metrics.prometheusRule.enabled needs metrics.enabled" -}}
{{- end -}}
{{- if and $v.rules.items $v.rules.existingConfigMap -}}
{{- fail "set rules.items or rules.existingConfigMap, not both" -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (gt (int64 $v.autoscaling.minReplicas) (int64 $v.autoscaling.maxReplicas)) -}}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if $v.credentialsProxy.enabled -}}
{{- if not $id.jwt -}}
{{- fail "credentialsProxy.enabled needs config.identity.jwt: the sidecar identifies the app's pod with its projected service-account token (audience credentialsProxy.tokenAudience), a JWT the service must verify" -}}
{{- end -}}
{{- /* The service requires client certificates unless mtls.required is false. */ -}}
{{- if ne (toString (get ($id.mtls | default (dict "required" false)) "required")) "false" -}}
{{- fail "credentialsProxy.enabled with config.identity.mtls.required: the sidecar presents no client certificate, so the service would refuse its connection; set mtls.required=false (the sidecar then identifies with its JWT)" -}}
{{- end -}}
{{- if not (has $v.credentialsProxy.tokenAudience ($id.jwt.audiences | default list)) -}}
{{- fail "credentialsProxy.tokenAudience must be one of config.identity.jwt.audiences, or the service refuses the sidecar's token" -}}
{{- end -}}
{{- end -}}
{{- $ports := list (int64 $v.service.grpcPort) -}}
{{- if $v.metrics.enabled -}}{{- $ports = append $ports (int64 $v.metrics.port) -}}{{- end -}}
{{- if $v.http.enabled -}}{{- $ports = append $ports (int64 $v.http.port) -}}{{- end -}}
{{- if ne (len $ports) (len (uniq $ports)) -}}
{{- fail "service.grpcPort, metrics.port and http.port must differ" -}}
{{- end -}}
{{- end -}}

{{/* The action of a probe: (dict "root" $ "service" NAME). gRPC probes ask the
standard health service for NAME ("" = the process, storagegrants.v1.GrantService =
ready to grant). */}}
{{- define "storage-grants.probeAction" -}}
{{- $p := .root.Values.probes -}}
{{- if eq $p.type "grpc" -}}
grpc:
  port: {{ .root.Values.service.grpcPort }}
  service: {{ .service | quote }}
{{- else if eq $p.type "http" -}}
httpGet:
  port: metrics
  path: {{ if .service }}/readyz{{ else }}/livez{{ end }}
{{- else if eq $p.type "tcpSocket" -}}
tcpSocket:
  port: grpc
{{- else -}}
exec:
  command:
    {{- range $p.execCommand }}
    - {{ replace "{service}" $.service . | quote }}
    {{- end }}
{{- end -}}
{{- end -}}

{{/* ===== the credentials proxy, as a sidecar of the apps' pods ===== */}}

{{/* The loopback URL an app's AWS SDK fetches from (AWS_CONTAINER_CREDENTIALS_FULL_URI). */}}
{{- define "storage-grants.credentialsProxy.uri" -}}
{{- $p := .Values.credentialsProxy -}}
{{- printf "http://127.0.0.1:%d/v1/credentials/%s/%s?access=%s" (int64 $p.port) $p.bucket $p.prefix $p.access -}}
{{- if $p.list -}}&list=true{{- end -}}
{{- end -}}

{{/* The service's gRPC address as seen from another namespace's pod. */}}
{{- define "storage-grants.credentialsProxy.endpoint" -}}
{{- printf "%s://%s.%s.svc.cluster.local:%d" (ternary "https" "http" (eq (include "storage-grants.grpcTls" .) "true")) (include "storage-grants.fullname" .) .Release.Namespace (int64 .Values.service.grpcPort) -}}
{{- end -}}

{{/* A pod-spec fragment for an app's pod template: the proxy as a native sidecar
(an init container that keeps running), the projected token it sends, and the one
environment variable the app's SDK needs. Rendered into ConfigMap
NAME-credentials-proxy for app teams to copy. */}}
{{- define "storage-grants.credentialsProxy.podSpecSnippet" -}}
{{- $p := .Values.credentialsProxy -}}
# Merge into spec.template.spec of your app's Deployment, StatefulSet or Job
# (Kubernetes 1.30 or later, as the chart: a native sidecar, started before your
# containers; it writes the app's token before it listens).
# Your pod's service account is the caller the rules name:
# system:serviceaccount:NAMESPACE:NAME. Change the bucket, prefix and access in the
# URL to a scope your rules allow; one sidecar serves any number of scopes.
initContainers:
  - name: storage-grants-credentials-proxy
    image: {{ include "storage-grants.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    # Keeps running beside your containers, and does not hold up a Job's completion.
    restartPolicy: Always
    args:
      - credentials-proxy
      - --endpoint
      - {{ include "storage-grants.credentialsProxy.endpoint" . }}
      - --listen
      - 127.0.0.1:{{ $p.port }}
      - --token-file
      - /var/run/secrets/storage-grants/token
      # The app's token, written here at start: the proxy answers only requests that
      # send it, so a forged request or a web page cannot fetch from loopback.
      - --authorization-token-file
      - /var/run/storage-grants-proxy/token
      {{- if and (eq (include "storage-grants.grpcTls" .) "true") $p.caConfigMap }}
      # The service's certificate is checked against this CA (default: system roots).
      - --ca-file
      - /var/run/secrets/storage-grants-ca/ca.crt
      {{- end }}
    resources:
      {{- toYaml $p.resources | nindent 6 }}
    securityContext:
      {{- /* The app's pod may run as another user: the sidecar names its own, once. */}}
      {{- toYaml (merge (dict "runAsUser" (.Values.podSecurityContext.runAsUser | default 65532)) (omit .Values.securityContext "runAsUser")) | nindent 6 }}
      runAsGroup: {{ .Values.podSecurityContext.runAsGroup | default 65532 }}
    volumeMounts:
      - name: storage-grants-token
        mountPath: /var/run/secrets/storage-grants
        readOnly: true
      - name: storage-grants-proxy
        mountPath: /var/run/storage-grants-proxy
      {{- if and (eq (include "storage-grants.grpcTls" .) "true") $p.caConfigMap }}
      - name: storage-grants-ca
        mountPath: /var/run/secrets/storage-grants-ca
        readOnly: true
      {{- end }}
containers:
  - name: app  # your container: add these variables to its env, and the mount
    env:
      - name: AWS_CONTAINER_CREDENTIALS_FULL_URI
        value: {{ include "storage-grants.credentialsProxy.uri" . | quote }}
      - name: AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
        value: /var/run/storage-grants-proxy/token
    volumeMounts:
      - name: storage-grants-proxy
        mountPath: /var/run/storage-grants-proxy
        readOnly: true
volumes:
  # The pod's identity for storage-grants: a service-account token for its audience
  # only, rotated by the kubelet (the proxy reads it again for every fetch).
  - name: storage-grants-token
    projected:
      sources:
        - serviceAccountToken:
            path: token
            audience: {{ $p.tokenAudience }}
            expirationSeconds: {{ $p.tokenExpirationSeconds }}
  # The app's token for the proxy: shared by the sidecar (which writes it) and the app
  # (which sends it), and by no other container.
  - name: storage-grants-proxy
    emptyDir:
      medium: Memory
      sizeLimit: 1Mi
  {{- if and (eq (include "storage-grants.grpcTls" .) "true") $p.caConfigMap }}
  # The CA of the service's certificate, in the app's namespace (key ca.crt).
  - name: storage-grants-ca
    configMap:
      name: {{ $p.caConfigMap }}
  {{- end }}
{{- end -}}
