//! Documents Istio accepts: each must draw no error.

use super::*;

#[test]
fn valid_documents_draw_no_error() {
    let valid = [
        doc("Gateway", "{selector: {istio: ingressgateway}, servers: [{port: {number: 443, name: https, protocol: https}, hosts: ['ns1/*.example.com', './a.example.org', '10.0.0.1'], tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca, subjectAltNames: [client]}}]}"),
        doc("Gateway", "{servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], tls: {mode: PASSTHROUGH}}, {port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {httpsRedirect: true}}]}"),
        doc("VirtualService", "{hosts: [reviews], http: [{match: [{uri: {prefix: ''}}, {headers: {end-user: {}}, withoutHeaders: {x: {regex: '*'}}}], route: [{destination: {host: reviews}, weight: 0}, {destination: {host: ratings}, weight: 7}], retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure,503'}, timeout: 10s, headers: {request: {set: {x-a: '%HOSTNAME%', x-b: '10%%', x-c: '%REQ(x-id)% from %DOWNSTREAM_REMOTE_ADDRESS%'}}}}]}"),
        doc("VirtualService", "{hosts: ['*'], gateways: [ns/t], http: [{redirect: {uri: /x, derivePort: FROM_REQUEST_PORT, scheme: https}}]}")
            + "---\n"
            + &doc("Gateway", "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]}"),
        doc("DestinationRule", "{host: reviews, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}}}, connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}}, outlierDetection: {consecutiveErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}, portLevelSettings: [{port: {number: 443}, tls: {mode: SIMPLE, sni: a.example.com}}]}, subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}]}"),
        doc("ServiceEntry", "{hosts: ['*.wikipedia.org'], ports: [{number: 443, name: tls, protocol: TLS}]}"),
        doc("ServiceEntry", "{hosts: [db.example.com], addresses: [10.0.0.0/8, 'fd00::/128'], resolution: STATIC, endpoints: [{address: 10.0.0.1}], ports: [{number: 5432, name: tcp, protocol: TCP}]}"),
        doc("DestinationRule", "{host: a.example.com, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 10s, aggression: 1.5}}}, subsets: [{name: v1, labels: {app.kubernetes.io/version: v1}}]}"),
        doc("Gateway", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_2, maxProtocolVersion: TLSV1_2}}]}"),
        doc("WorkloadEntry", "{network: network-2, labels: {app: a}}"),
        doc("DestinationRule", "{host: a.example.com, trafficPolicy: {loadBalancer: {consistentHash: {maglev: {tableSize: 65537}, httpHeaderName: x-user}}, outlierDetection: {consecutiveErrors: 0}, tls: {mode: SIMPLE, insecureSkipVerify: true}}}"),
        doc("Gateway", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, tlsCertificates: [{serverCertificate: /rsa.pem, privateKey: /rsa.key}, {serverCertificate: /ec.pem, privateKey: /ec.key}]}}]}"),
        doc("VirtualService", "{hosts: [a.example.com], http: [{corsPolicy: {allowOrigins: [{exact: 'https://a.example.com'}], allowHeaders: ['*', x-custom], exposeHeaders: ['*']}, route: [{destination: {host: a.example.com}}]}]}"),
        doc("Gateway", "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialNames: [rsa, ecdsa]}}]}"),
        doc("DestinationRule", "{host: a.example.com, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {failover: [{from: us, to: eu}]}}, outlierDetection: {consecutive5xxErrors: 5}}}"),
        doc("VirtualService", "{hosts: [a.example.com], http: [{headers: {request: {remove: [x-debug]}, response: {remove: [server]}}, route: [{destination: {host: a.example.com}}]}]}"),
        doc("DestinationRule", "{host: a.example.com, exportTo: [apps, '.'], trafficPolicy: {tunnel: {protocol: CONNECT, targetHost: proxy.example.com, targetPort: 3128}}}"),
        doc("ServiceEntry", "{hosts: [web.example.com], resolution: STATIC, endpoints: [{address: 10.0.0.1}], ports: [{number: 80, name: http, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]}"),
        doc("ServiceEntry", "{hosts: [web.example.com], resolution: DNS, endpoints: [{address: a.example.com}, {address: b.example.com}], ports: [{number: 80, name: http, protocol: HTTP}]}"),
        doc("ServiceEntry", "{hosts: [web.example.com], resolution: DNS_ROUND_ROBIN, endpoints: [{address: a.example.com}], ports: [{number: 80, name: http, protocol: HTTP}]}"),
        doc("ServiceEntry", "{hosts: ['*.example.com'], resolution: DYNAMIC_DNS, location: MESH_INTERNAL, ports: [{number: 443, name: tls, protocol: TLS}]}"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: t, namespace: ns, labels: {istio.io/use-waypoint: none}}\n\
         spec: {hosts: ['*.example.com'], resolution: DYNAMIC_DNS, location: MESH_INTERNAL, ports: [{number: 443, name: tls, protocol: TLS}]}\n"
            .to_string(),
        doc("ServiceEntry", "{hosts: [nginx.example.com], resolution: DNS, endpoints: [{address: my-nginx.mesh-external.svc.cluster.local, ports: {https: 443}}], ports: [{number: 443, name: https, protocol: HTTPS}]}"),
        // Zero is a limit like any other (Istio rejects only negative ones).
        doc("DestinationRule", "{host: a.example.com, trafficPolicy: {connectionPool: {tcp: {maxConnections: 0}}}}"),
        // useClientProtocol, or an h2 upgrade, each alone.
        doc("DestinationRule", "{host: a.example.com, trafficPolicy: {connectionPool: {http: {useClientProtocol: true}}}, subsets: [{name: up, labels: {v: up}, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}}]}"),
        // insecureSkipVerify beside credentialName is refused only in SIMPLE mode.
        doc("DestinationRule", "{host: a.example.com, trafficPolicy: {tls: {mode: MUTUAL, credentialName: client, insecureSkipVerify: true}}}"),
        // DYNAMIC_DNS with a waypoint is refused only for MESH_INTERNAL.
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: t, namespace: ns, labels: {istio.io/use-waypoint: egress-waypoint}}\n\
         spec: {hosts: ['*.example.com'], resolution: DYNAMIC_DNS, location: MESH_EXTERNAL, ports: [{number: 443, name: tls, protocol: TLS}]}\n"
            .to_string(),
        // A redirect to a fixed uri may follow any match; no retries is a retry policy.
        doc("VirtualService", "{hosts: [a.example.com], http: [{match: [{uri: {exact: /old}}], redirect: {uri: /new}}, {retries: {attempts: 0}, route: [{destination: {host: a.example.com}}]}]}"),
        // Named servers, each name once.
        doc("Gateway", "{servers: [{name: web, port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}, {name: api, port: {number: 8080, name: http-api, protocol: HTTP}, hosts: ['*']}]}"),
        // A gateway's TLS rule may name the auto-passthrough SNI of a mesh service.
        doc("VirtualService", "{hosts: [outbound_.443_._.api.example.com], gateways: [ns/t], tls: [{match: [{sniHosts: [outbound_.443_._.api.example.com]}], route: [{destination: {host: api.example.com}}]}]}")
            + "---\n"
            + &doc("Gateway", "{servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: ['*'], tls: {mode: AUTO_PASSTHROUGH}}]}"),
        doc("VirtualService", "{hosts: [db.example.com], tcp: [{match: [{sourceSubnet: 10.0.0.0/8}, {sourceSubnet: 10.1.2.3}], route: [{destination: {host: db.example.com}}]}]}"),
        // A delegate: no hosts, http rules only.
        doc("VirtualService", "{http: [{route: [{destination: {host: reviews}}]}]}"),
        // `*` alone exports everywhere; the authority set once, by rewrite.
        doc("DestinationRule", "{host: a.example.com, exportTo: ['*'], trafficPolicy: {loadBalancer: {simple: RANDOM}}}"),
        doc("VirtualService", "{hosts: [a.example.com], exportTo: ['*'], http: [{rewrite: {authority: b.example.com}, route: [{destination: {host: a.example.com}}]}]}"),
        // The shortest duration Istio takes is one millisecond.
        doc("VirtualService", "{hosts: [a.example.com], http: [{timeout: 1ms, route: [{destination: {host: a.example.com}}]}]}"),
        // A rewrite of the uri alone, or by regex alone.
        doc("VirtualService", "{hosts: [a.example.com], http: [{rewrite: {uri: /v2}, route: [{destination: {host: a.example.com}}]}]}"),
        doc("VirtualService", "{hosts: [a.example.com], http: [{rewrite: {uriRegexRewrite: {match: '^/v1(/.*)', rewrite: '/v2\\1'}}, route: [{destination: {host: a.example.com}}]}]}"),
        // A unix socket endpoint behind a service of one port.
        doc("ServiceEntry", "{hosts: [local.example.com], resolution: STATIC, endpoints: [{address: 'unix:///run/app.sock'}], ports: [{number: 80, name: http, protocol: HTTP}]}"),
        // An abort with a gRPC status by its name.
        doc("VirtualService", "{hosts: [a.example.com], http: [{fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}}, route: [{destination: {host: a.example.com}}]}]}"),
        // `~` (exported nowhere) is a ServiceEntry's to use.
        doc("ServiceEntry", "{hosts: [api.example.com], exportTo: ['~'], ports: [{number: 443, name: tls, protocol: TLS}]}"),
        // A server on a unix socket has port 0; a destination sets its authority once.
        doc("Gateway", "{servers: [{port: {number: 0, name: http, protocol: HTTP}, bind: 'unix:///run/gw.sock', hosts: ['*']}]}"),
        doc("VirtualService", "{hosts: [a.example.com], http: [{route: [{destination: {host: a.example.com}, headers: {request: {set: {':authority': b.example.com}}}}]}]}"),
        // A regex of Istio's largest length, 1024; an empty label value (Kubernetes allows it).
        doc("VirtualService", &format!("{{hosts: [a.example.com], http: [{{match: [{{uri: {{regex: '{}'}}}}], route: [{{destination: {{host: a.example.com}}}}]}}]}}", "a".repeat(1024))),
        doc("DestinationRule", "{host: a.example.com, subsets: [{name: v1, labels: {version: v1, track: ''}}]}"),
        // Several hosts resolved by DNS are fine when every port is HTTP (routed by Host).
        doc("ServiceEntry", "{hosts: [a.example.com, b.example.com], resolution: DNS, ports: [{number: 80, name: http, protocol: HTTP}]}"),
    ];
    for yaml in valid {
        let errors: Vec<_> = check(&yaml).into_iter().filter(Diagnostic::is_error).collect();
        assert!(errors.is_empty(), "{yaml}\n{errors:#?}");
    }
}
