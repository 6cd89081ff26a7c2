"""Shared test data: the documented example lines of each format
(../shared/reference/telemetry-formats.md §1.4, §3, §5)."""

from __future__ import annotations

pytest_plugins = ("hook_server", "kafka_fixtures", "kube_fixtures")

ISTIO_TEXT_PRIMARY_200 = (
    '[2026-11-26T05:06:07.123Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 358 12 11 "-" '
    '"Go-http-client/1.1" "9b1f3c2e-6d1a-9c4f-a1b2-3c4d5e6f7a8b" "reviews:9080" "10.244.1.17:9080" '
    "outbound|9080|primary|reviews.default.svc.cluster.local 10.244.2.5:51234 10.96.41.10:9080 "
    "10.244.2.5:40112 - default"
)
ISTIO_TEXT_CANARY_503 = (
    '[2026-11-26T05:06:07.456Z] "GET /reviews/1 HTTP/1.1" 503 UF,URX '
    'upstream_reset_before_response_started{connection_failure} - "-" 0 91 62 - "-" '
    '"Go-http-client/1.1" "c0ffee00-1111-2222-3333-444455556666" "reviews:9080" "10.244.3.22:9080" '
    "outbound|9080|canary|reviews.default.svc.cluster.local - 10.96.41.10:9080 10.244.2.5:40114 - default"
)
ISTIO_JSON_INBOUND_CANARY = (
    '{"start_time":"2026-11-26T05:06:07.130Z","route_name":"default","method":"GET",'
    '"path":"/reviews/0","protocol":"HTTP/1.1","response_code":200,"response_flags":"-",'
    '"response_code_details":"via_upstream","connection_termination_details":null,'
    '"bytes_received":0,"bytes_sent":358,"duration":4,"upstream_service_time":"3",'
    '"x_forwarded_for":null,"user_agent":"Go-http-client/1.1",'
    '"request_id":"9b1f3c2e-6d1a-9c4f-a1b2-3c4d5e6f7a8b","authority":"reviews:9080",'
    '"upstream_host":"10.244.3.22:9080","upstream_cluster":"inbound|9080||",'
    '"upstream_local_address":"127.0.0.6:46243","downstream_local_address":"10.244.3.22:9080",'
    '"downstream_remote_address":"10.244.2.5:51234",'
    '"requested_server_name":"outbound_.9080_.canary_.reviews.default.svc.cluster.local",'
    '"upstream_transport_failure_reason":null}'
)
LINKERD_JSON = (
    '{"client.addr":"10.42.0.70:32996","client.id":"traffic.booksapp.serviceaccount.identity.linkerd.'
    'cluster.local","host":"webapp:7000","method":"POST","processing_ns":"30036","request_bytes":"33",'
    '"response_bytes":"0","status":303,"timestamp":"2022-08-23T20:33:42.436964052Z",'
    '"total_ns":"14122403","trace_id":"","uri":"http://webapp:7000/authors",'
    '"user_agent":"Go-http-client/1.1","version":"HTTP/2.0"}'
)
LINKERD_APACHE = (
    "10.42.0.63:51160 traffic.booksapp.serviceaccount.identity.linkerd.cluster.local - "
    '[2022-08-23T20:28:20.187706137Z] "POST http://webapp:7000/authors HTTP/2.0" 303'
)
NGINX_PRIMARY = (
    '10.244.0.1 - - [25/Feb/2026:10:30:15 +0000] "GET /api/v1/users HTTP/1.1" 200 1234 '
    '"https://example.com" "Mozilla/5.0" 456 0.032 [default-myapp-svc-80] [] 192.168.22.1:8080 '
    "1234 0.031 200 abc123def456"
)
NGINX_CANARY = (
    '10.244.0.1 - - [25/Feb/2026:10:30:16 +0000] "GET /api/v1/users HTTP/1.1" 503 0 '
    '"https://example.com" "Mozilla/5.0" 456 0.050 [default-myapp-svc-80] [default-myapp-canary-80] '
    "192.168.22.9:8080 0 0.049 503 abc123def457"
)
