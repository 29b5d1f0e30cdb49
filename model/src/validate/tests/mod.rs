//! Validation tests: a table of invalid documents, one or more per rule, each asserting the code,
//! the field path and the severity; and valid documents that must draw no error.

use crate::diag::{Code, Diagnostic, Severity};

fn check(yaml: &str) -> Vec<Diagnostic> {
    let loaded = crate::load_str("t.yaml", yaml);
    let mut d = loaded.diagnostics;
    d.extend(super::validate(&loaded.config));
    d
}

fn doc(kind: &str, spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: t, namespace: ns}}\nspec: {spec}\n")
}

const E: Severity = Severity::Error;
const W: Severity = Severity::Warning;

const HTTP80: &str = "port: {number: 80, name: http, protocol: HTTP}";
const HTTPS443: &str = "port: {number: 443, name: https, protocol: HTTPS}";
const ROUTE: &str = "route: [{destination: {host: a.example.com}}]";

/// (kind, spec, code, field, severity)
fn cases() -> Vec<(&'static str, String, Code, &'static str, Severity)> {
    let gw = |servers: &str| format!("{{selector: {{istio: ingressgateway}}, servers: [{servers}]}}");
    let srv = |port: &str, rest: &str| format!("{{{port}, hosts: ['a.example.com']{rest}}}");
    let https = |tls: &str| gw(&srv(HTTPS443, &format!(", tls: {tls}")));
    let vs = |rule: &str| format!("{{hosts: [a.example.com], gateways: [gw], http: [{rule}]}}");
    let dr = |tp: &str| format!("{{host: a.example.com, trafficPolicy: {tp}}}");
    let se = |rest: &str| {
        format!("{{hosts: [api.example.com], ports: [{{number: 443, name: https, protocol: HTTPS}}]{rest}}}")
    };
    vec![
        // Gateway
        ("Gateway", "{servers: []}".into(), Code::Required, "spec.servers", E),
        ("Gateway", gw(&format!("{{{HTTP80}, hosts: []}}")), Code::Required, "spec.servers[0].hosts", E),
        ("Gateway", gw(&format!("{{{HTTP80}, hosts: [foo]}}")), Code::InvalidHost, "spec.servers[0].hosts[0]", E),
        ("Gateway", gw(&format!("{{{HTTP80}, hosts: ['*foo.com']}}")), Code::InvalidHost, "spec.servers[0].hosts[0]", E),
        ("Gateway", gw(&format!("{{{HTTP80}, hosts: ['Bad_NS/a.com']}}")), Code::InvalidHost, "spec.servers[0].hosts[0]", E),
        ("Gateway", gw(&srv("port: {number: 70000, name: http, protocol: HTTP}", "")), Code::InvalidPort, "spec.servers[0].port.number", E),
        ("Gateway", gw(&srv("port: {number: 80, name: http, protocol: HTTX}", "")), Code::UnknownProtocol, "spec.servers[0].port.protocol", E),
        ("Gateway", gw(&srv("port: {number: 80, protocol: HTTP}", "")), Code::Required, "spec.servers[0].port.name", E),
        ("Gateway", gw(&format!("{}, {}", srv(HTTP80, ""), srv("port: {number: 81, name: http, protocol: HTTP}", ""))), Code::Duplicate, "spec.servers[1].port.name", E),
        ("Gateway", gw(&srv("port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}", "")), Code::InvalidValue, "spec.servers[0].port.targetPort", E),
        ("Gateway", gw(&srv(HTTP80, ", bind: not-an-ip")), Code::InvalidValue, "spec.servers[0].bind", E),
        ("Gateway", gw(&srv(HTTP80, ", bind: 'unix:///run/gw.sock'")), Code::InvalidPort, "spec.servers[0].port.number", E),
        ("Gateway", gw(&srv(HTTPS443, "")), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", https("{mode: SIMPLE, privateKey: /k.pem}"), Code::GatewayTls, "spec.servers[0].tls.serverCertificate", E),
        ("Gateway", https("{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}"), Code::GatewayTls, "spec.servers[0].tls.caCertificates", E),
        ("Gateway", https("{mode: OPTIONAL_MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}"), Code::GatewayTls, "spec.servers[0].tls.caCertificates", E),
        ("Gateway", https("{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, credentialName: c}"), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", https("{mode: ISTIO_MUTUAL, credentialName: c}"), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", https("{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, caCrl: /crl.pem}"), Code::GatewayTls, "spec.servers[0].tls.caCrl", E),
        ("Gateway", gw(&srv(HTTP80, ", tls: {mode: SIMPLE, credentialName: c}")), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", gw(&srv("port: {number: 9000, name: tcp, protocol: TCP}", ", tls: {httpsRedirect: true}")), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", https("{mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}"), Code::GatewayTls, "spec.servers[0].tls.minProtocolVersion", E),
        ("Gateway", https("{mode: SIMPLE, credentialName: c, httpsRedirect: true}"), Code::GatewayTls, "spec.servers[0].tls.httpsRedirect", W),
        ("Gateway", https("{mode: SIMPLE, credentialName: c, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, fake]}"), Code::CipherSuite, "spec.servers[0].tls.cipherSuites[1]", W),
        ("Gateway", https("{serverCertificate: /c.pem, privateKey: /k.pem}"), Code::GatewayTls, "spec.servers[0].tls", W),
        ("Gateway", https("{mode: SIMPLE, credentialName: c, subjectAltNames: [x]}"), Code::GatewayTls, "spec.servers[0].tls.subjectAltNames", W),
        // VirtualService
        ("VirtualService", "{hosts: [a.example.com]}".into(), Code::Required, "spec", E),
        ("VirtualService", format!("{{hosts: ['*'], http: [{{{ROUTE}}}]}}"), Code::InvalidHost, "spec.hosts[0]", E),
        ("VirtualService", format!("{{hosts: ['*.foo.com', a.foo.com], gateways: [gw], http: [{{{ROUTE}}}]}}"), Code::Duplicate, "spec.hosts[1]", E),
        ("VirtualService", format!("{{hosts: [a.example.com], gateways: [./gw], http: [{{{ROUTE}}}]}}"), Code::InvalidGatewayRef, "spec.gateways[0]", E),
        ("VirtualService", format!("{{hosts: [a.example.com], gateways: [gw.ns.svc.cluster.local], http: [{{{ROUTE}}}]}}"), Code::InvalidGatewayRef, "spec.gateways[0]", W),
        ("VirtualService", format!("{{gateways: [gw], http: [{{{ROUTE}}}]}}"), Code::Conflict, "spec.gateways", E),
        ("VirtualService", format!("{{hosts: [a.example.com], gateways: [gw], exportTo: ['*', ns], http: [{{{ROUTE}}}]}}"), Code::InvalidExportTo, "spec.exportTo[0]", E),
        ("VirtualService", format!("{{hosts: [a.example.com], gateways: [gw], exportTo: ['.', ns], http: [{{{ROUTE}}}]}}"), Code::InvalidExportTo, "spec.exportTo[1]", E),
        ("VirtualService", format!("{{hosts: [a.example.com], gateways: [gw], exportTo: ['~'], http: [{{{ROUTE}}}]}}"), Code::InvalidExportTo, "spec.exportTo[0]", E),
        ("VirtualService", vs("{name: r}"), Code::VsRule, "spec.http[0]", E),
        ("VirtualService", vs(&format!("{{redirect: {{uri: /x}}, {ROUTE}}}")), Code::VsRule, "spec.http[0].route", E),
        ("VirtualService", vs("{directResponse: {status: 200}, fault: {abort: {httpStatus: 500, percentage: {value: 1}}}}"), Code::VsRule, "spec.http[0].fault", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, mirror: {{host: b.example.com}}, mirrors: [{{destination: {{host: c.example.com}}}}]}}")), Code::VsRule, "spec.http[0].mirrors", E),
        ("VirtualService", vs(&format!("{{match: [{{headers: {{end-user: {{prefix: ''}}}}}}], {ROUTE}}}")), Code::InvalidStringMatch, "spec.http[0].match[0].headers.end-user.prefix", E),
        ("VirtualService", vs(&format!("{{match: [{{uri: {{regex: '(a'}}}}], {ROUTE}}}")), Code::InvalidRegex, "spec.http[0].match[0].uri.regex", E),
        ("VirtualService", vs(&format!("{{match: [{{uri: {{regex: '{}'}}}}], {ROUTE}}}", "a".repeat(1025))), Code::InvalidRegex, "spec.http[0].match[0].uri.regex", E),
        ("VirtualService", vs(&format!("{{match: [{{uri: {{exact: /a, prefix: /b}}}}], {ROUTE}}}")), Code::InvalidStringMatch, "spec.http[0].match[0].uri", E),
        ("VirtualService", vs(&format!("{{match: [{{headers: {{'bad header': {{exact: x}}}}}}], {ROUTE}}}")), Code::InvalidHeader, "spec.http[0].match[0].headers.bad header", E),
        ("VirtualService", vs(&format!("{{match: [{{port: 0}}], {ROUTE}}}")), Code::InvalidPort, "spec.http[0].match[0].port", E),
        ("VirtualService", vs("{route: [{destination: {host: a.example.com}, weight: -1}, {destination: {host: b.example.com}, weight: 2}]}"), Code::InvalidWeight, "spec.http[0].route[0].weight", E),
        ("VirtualService", vs("{route: [{destination: {host: a.example.com}, weight: 0}, {destination: {host: b.example.com}, weight: 0}]}"), Code::InvalidWeight, "spec.http[0].route", E),
        ("VirtualService", vs("{route: [{destination: {host: '*'}}]}"), Code::InvalidHost, "spec.http[0].route[0].destination.host", E),
        ("VirtualService", vs("{route: [{destination: {host: a.example.com, subset: V_1}}]}"), Code::InvalidName, "spec.http[0].route[0].destination.subset", E),
        ("VirtualService", vs("{route: [{weight: 1}]}"), Code::Required, "spec.http[0].route[0].destination", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, headers: {{request: {{set: {{':path': /x}}}}}}}}")), Code::InvalidHeader, "spec.http[0].headers.request.set.:path", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, headers: {{response: {{set: {{host: x}}}}}}}}")), Code::InvalidHeader, "spec.http[0].headers.response.set.host", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, headers: {{request: {{remove: [Host]}}}}}}")), Code::InvalidHeader, "spec.http[0].headers.request.remove[0]", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, rewrite: {{authority: a}}, headers: {{request: {{set: {{':authority': b}}}}}}}}")), Code::InvalidHeader, "spec.http[0]", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, headers: {{request: {{add: {{x-pct: '100%'}}}}}}}}")), Code::InvalidHeader, "spec.http[0].headers.request.add.x-pct", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, headers: {{request: {{add: {{x-var: '%(x)%'}}}}}}}}")), Code::InvalidHeader, "spec.http[0].headers.request.add.x-var", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, headers: {{request: {{add: {{x-var: '%req(x)%'}}}}}}}}")), Code::InvalidHeader, "spec.http[0].headers.request.add.x-var", E),
        ("VirtualService", vs("{match: [{uri: {prefix: /a}}], redirect: {uri: /b, prefixRewrite: /c}}"), Code::InvalidRedirect, "spec.http[0].redirect", E),
        ("VirtualService", vs("{match: [{uri: {exact: /a}}], redirect: {prefixRewrite: /c}}"), Code::InvalidRedirect, "spec.http[0].redirect.prefixRewrite", E),
        ("VirtualService", vs("{redirect: {uri: /b, redirectCode: 200}}"), Code::InvalidRedirect, "spec.http[0].redirect.redirectCode", E),
        ("VirtualService", vs("{redirect: {uri: /b, redirectCode: 305}}"), Code::InvalidRedirect, "spec.http[0].redirect.redirectCode", W),
        ("VirtualService", vs("{redirect: {scheme: ftp}}"), Code::InvalidRedirect, "spec.http[0].redirect.scheme", E),
        ("VirtualService", vs("{redirect: {redirectCode: 302}}"), Code::InvalidRedirect, "spec.http[0].redirect", E),
        ("VirtualService", vs("{redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}}"), Code::InvalidRedirect, "spec.http[0].redirect.derivePort", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, rewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}}}")), Code::InvalidRewrite, "spec.http[0].rewrite", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, rewrite: {{uriRegexRewrite: {{match: '^/a'}}}}}}")), Code::InvalidRewrite, "spec.http[0].rewrite.uriRegexRewrite", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, rewrite: {{}}}}")), Code::InvalidRewrite, "spec.http[0].rewrite", E),
        ("VirtualService", vs("{directResponse: {status: 100}}"), Code::InvalidDirectResponse, "spec.http[0].directResponse.status", E),
        ("VirtualService", vs("{directResponse: {status: 200, body: {string: a, bytes: YQ==}}}"), Code::InvalidDirectResponse, "spec.http[0].directResponse.body", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, fault: {{}}}}")), Code::InvalidFault, "spec.http[0].fault", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, fault: {{abort: {{httpStatus: 600, percentage: {{value: 1}}}}}}}}")), Code::InvalidFault, "spec.http[0].fault.abort.httpStatus", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, fault: {{abort: {{grpcStatus: UNAVAILBLE, percentage: {{value: 1}}}}}}}}")), Code::InvalidFault, "spec.http[0].fault.abort.grpcStatus", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, fault: {{abort: {{http2Error: x, percentage: {{value: 1}}}}}}}}")), Code::InvalidFault, "spec.http[0].fault.abort.http2Error", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, fault: {{delay: {{exponentialDelay: 1s, percentage: {{value: 1}}}}}}}}")), Code::InvalidFault, "spec.http[0].fault.delay.exponentialDelay", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, fault: {{delay: {{fixedDelay: 1s, percentage: {{value: 101}}}}}}}}")), Code::InvalidPercent, "spec.http[0].fault.delay.percentage", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, fault: {{abort: {{httpStatus: 503}}}}}}")), Code::InvalidFault, "spec.http[0].fault.abort", W),
        ("VirtualService", vs(&format!("{{{ROUTE}, retries: {{attempts: -1}}}}")), Code::InvalidRetry, "spec.http[0].retries.attempts", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, retries: {{attempts: 0, retryOn: 5xx}}}}")), Code::InvalidRetry, "spec.http[0].retries", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, retries: {{attempts: 3, retryOn: '5xx,gateway-eror'}}}}")), Code::InvalidRetry, "spec.http[0].retries.retryOn", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, timeout: 500us}}")), Code::InvalidDuration, "spec.http[0].timeout", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, timeout: 1500500us}}")), Code::InvalidDuration, "spec.http[0].timeout", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, corsPolicy: {{allowMethods: [FETCH]}}}}")), Code::InvalidCors, "spec.http[0].corsPolicy.allowMethods[0]", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, corsPolicy: {{maxAge: 1500ms}}}}")), Code::InvalidCors, "spec.http[0].corsPolicy.maxAge", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, corsPolicy: {{allowOrigins: [{{exact: ''}}]}}}}")), Code::InvalidCors, "spec.http[0].corsPolicy.allowOrigins[0]", E),
        ("VirtualService", vs(&format!("{{{ROUTE}, mirror: {{host: b.example.com}}, mirrorPercentage: {{value: 200}}}}")), Code::InvalidPercent, "spec.http[0].mirrorPercentage", E),
        ("VirtualService", format!("{{hosts: [a.example.com], http: [{{match: [{{headers: {{'@request.auth.claims.sub': {{exact: x}}}}}}], {ROUTE}}}]}}"), Code::InvalidHeader, "spec.http[0].match[0].headers.@request.auth.claims.sub", E),
        ("VirtualService", "{hosts: [a.example.com], gateways: [gw], tls: [{route: [{destination: {host: a.example.com}}]}]}".into(), Code::Required, "spec.tls[0].match", E),
        ("VirtualService", "{hosts: [a.example.com], gateways: [gw], tls: [{match: [{sniHosts: [b.example.com]}], route: [{destination: {host: a.example.com}}]}]}".into(), Code::SniNotInHosts, "spec.tls[0].match[0].sniHosts[0]", E),
        ("VirtualService", "{hosts: [a.example.com], gateways: [gw], tls: [{match: [{sniHosts: []}], route: [{destination: {host: a.example.com}}]}]}".into(), Code::Required, "spec.tls[0].match[0].sniHosts", E),
        ("VirtualService", "{hosts: [a.example.com], gateways: [gw], tcp: [{match: [{port: 9000}]}]}".into(), Code::Required, "spec.tcp[0].route", E),
        ("VirtualService", "{hosts: [a.example.com], gateways: [gw], tcp: [{match: [{destinationSubnets: [10.0.0.0/33]}], route: [{destination: {host: a.example.com}}]}]}".into(), Code::InvalidValue, "spec.tcp[0].match[0].destinationSubnets[0]", E),
        ("VirtualService", vs(&format!("{{{ROUTE}}}, {{match: [{{uri: {{prefix: /a}}}}], {ROUTE}}}")), Code::UnreachableRule, "spec.http[1]", W),
        ("VirtualService", vs(&format!("{{match: [{{uri: {{prefix: /}}}}], {ROUTE}}}, {{match: [{{uri: {{prefix: /a}}}}], {ROUTE}}}")), Code::IneffectiveMatch, "spec.http[1].match[0]", W),
        ("VirtualService", vs(&format!("{{match: [{{uri: {{exact: /a}}}}], {ROUTE}}}, {{match: [{{uri: {{exact: /a}}}}, {{uri: {{exact: /b}}}}], {ROUTE}}}")), Code::IneffectiveMatch, "spec.http[1].match[0]", W),
        // A match's name routes nothing: the same match under another name is still taken.
        ("VirtualService", vs(&format!("{{match: [{{name: first, uri: {{exact: /a}}}}], {ROUTE}}}, {{match: [{{name: second, uri: {{exact: /a}}}}, {{uri: {{exact: /b}}}}], {ROUTE}}}")), Code::IneffectiveMatch, "spec.http[1].match[0]", W),
        // DestinationRule
        ("DestinationRule", "{subsets: [{name: v1}]}".into(), Code::Required, "spec.host", E),
        ("DestinationRule", dr("{}"), Code::TrafficPolicy, "spec.trafficPolicy", E),
        ("DestinationRule", dr("{portLevelSettings: [{tls: {mode: SIMPLE}}]}"), Code::Required, "spec.trafficPolicy.portLevelSettings[0].port", E),
        ("DestinationRule", dr("{portLevelSettings: [{port: {number: 443}}]}"), Code::TrafficPolicy, "spec.trafficPolicy.portLevelSettings[0]", E),
        ("DestinationRule", dr("{tunnel: {targetHost: proxy.example.com, targetPort: 3128}, proxyProtocol: {version: V1}}"), Code::Conflict, "spec.trafficPolicy", E),
        ("DestinationRule", dr("{tunnel: {protocol: GET, targetHost: proxy.example.com, targetPort: 3128}}"), Code::TrafficPolicy, "spec.trafficPolicy.tunnel.protocol", E),
        ("DestinationRule", "{host: a.example.com, subsets: [{name: v1}, {name: v1}]}".into(), Code::Duplicate, "spec.subsets[1].name", E),
        ("DestinationRule", "{host: a.example.com, subsets: [{name: V1}]}".into(), Code::InvalidName, "spec.subsets[0].name", E),
        ("DestinationRule", "{host: a.example.com, subsets: [{name: v1, labels: {'bad key!': x}}]}".into(), Code::InvalidLabel, "spec.subsets[0].labels.bad key!", E),
        ("DestinationRule", dr("{connectionPool: {}}"), Code::TrafficPolicy, "spec.trafficPolicy.connectionPool", E),
        ("DestinationRule", dr("{connectionPool: {tcp: {maxConnections: -1}}}"), Code::TrafficPolicy, "spec.trafficPolicy.connectionPool.tcp.maxConnections", E),
        ("DestinationRule", dr("{connectionPool: {http: {useClientProtocol: true, h2UpgradePolicy: UPGRADE}}}"), Code::Conflict, "spec.trafficPolicy.connectionPool.http", E),
        ("DestinationRule", dr("{connectionPool: {http: {http2KeepAlive: {interval: 1s}}}}"), Code::Required, "spec.trafficPolicy.connectionPool.http.http2KeepAlive", E),
        ("DestinationRule", dr("{outlierDetection: {consecutiveLocalOriginFailures: 3}}"), Code::Conflict, "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", E),
        ("DestinationRule", dr("{outlierDetection: {maxEjectionPercent: 150}}"), Code::InvalidPercent, "spec.trafficPolicy.outlierDetection.maxEjectionPercent", E),
        ("DestinationRule", dr("{outlierDetection: {interval: 0s}}"), Code::InvalidDuration, "spec.trafficPolicy.outlierDetection.interval", E),
        ("DestinationRule", dr("{loadBalancer: {simple: ROUND_ROBIN, consistentHash: {httpHeaderName: x}}}"), Code::Conflict, "spec.trafficPolicy.loadBalancer", E),
        ("DestinationRule", dr("{loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}}"), Code::Required, "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name", E),
        ("DestinationRule", dr("{loadBalancer: {consistentHash: {httpHeaderName: x, maglev: {tableSize: 65536}}}}"), Code::TrafficPolicy, "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", E),
        ("DestinationRule", dr("{loadBalancer: {consistentHash: {httpHeaderName: x, minimumRingSize: 1024, ringHash: {minimumRingSize: 1024}}}}"), Code::Conflict, "spec.trafficPolicy.loadBalancer.consistentHash", E),
        ("DestinationRule", dr("{loadBalancer: {simple: ROUND_ROBIN, warmup: {minimumPercent: 10}}}"), Code::Required, "spec.trafficPolicy.loadBalancer.warmup.duration", E),
        ("DestinationRule", dr("{tls: {mode: MUTUAL, privateKey: /k.pem}}"), Code::ClientTls, "spec.trafficPolicy.tls.clientCertificate", E),
        ("DestinationRule", dr("{tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}}"), Code::ClientTls, "spec.trafficPolicy.tls.credentialName", E),
        ("DestinationRule", dr("{tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /ca.pem}}"), Code::ClientTls, "spec.trafficPolicy.tls.insecureSkipVerify", E),
        ("DestinationRule", dr("{tls: {sni: a.example.com}}"), Code::ClientTls, "spec.trafficPolicy.tls", W),
        ("DestinationRule", "{host: a.example.com, workloadSelector: {matchLabels: {app: a}}, exportTo: ['*'], subsets: [{name: v1}]}".into(), Code::InvalidExportTo, "spec.exportTo", E),
        ("DestinationRule", "{host: 'a.*.com'}".into(), Code::InvalidHost, "spec.host", E),
        // ServiceEntry
        ("ServiceEntry", "{ports: [{number: 80, name: http, protocol: HTTP}]}".into(), Code::Required, "spec.hosts", E),
        ("ServiceEntry", "{hosts: ['*'], ports: [{number: 80, name: http, protocol: HTTP}]}".into(), Code::InvalidHost, "spec.hosts[0]", E),
        ("ServiceEntry", se(", resolution: DNS, addresses: [10.0.0.0/8]"), Code::ServiceEntryResolution, "spec.addresses[0]", E),
        ("ServiceEntry", se(", addresses: [not-an-ip]"), Code::InvalidValue, "spec.addresses[0]", E),
        ("ServiceEntry", "{hosts: [a.example.com], ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http, protocol: HTTP}]}".into(), Code::Duplicate, "spec.ports[1].name", E),
        ("ServiceEntry", "{hosts: [a.example.com], ports: [{number: 80, name: http, protocol: HTTP}, {number: 80, name: web, protocol: HTTP}]}".into(), Code::Duplicate, "spec.ports[1].number", E),
        ("ServiceEntry", "{hosts: [a.example.com], ports: [{number: 80, name: http, protocol: HTPP}]}".into(), Code::UnknownProtocol, "spec.ports[0].protocol", E),
        ("ServiceEntry", se(", endpoints: [{address: 10.0.0.1}]"), Code::ServiceEntryResolution, "spec.endpoints", E),
        ("ServiceEntry", se(", resolution: STATIC, endpoints: [{address: api.example.com}]"), Code::ServiceEntryResolution, "spec.endpoints[0].address", E),
        ("ServiceEntry", "{hosts: ['*.example.com'], resolution: DNS, ports: [{number: 443, name: https, protocol: HTTPS}]}".into(), Code::ServiceEntryResolution, "spec.hosts[0]", E),
        ("ServiceEntry", se(", resolution: DNS_ROUND_ROBIN, endpoints: [{address: a.example.com}, {address: b.example.com}]"), Code::ServiceEntryResolution, "spec.endpoints", E),
        ("ServiceEntry", se(", resolution: STATIC, location: MESH_INTERNAL, endpoints: [{address: 10.0.0.1}], workloadSelector: {labels: {app: a}}"), Code::Conflict, "spec.workloadSelector", E),
        ("ServiceEntry", se(", resolution: STATIC, endpoints: [{address: 10.0.0.1, ports: {web: 8443}}]"), Code::InvalidValue, "spec.endpoints[0].ports.web", E),
        ("ServiceEntry", "{hosts: [a.example.com, b.example.com], addresses: [240.0.0.1], resolution: DNS, ports: [{number: 3306, name: mysql, protocol: MYSQL}]}".into(), Code::ServiceEntryResolution, "spec.hosts", E),
        ("ServiceEntry", se(", resolution: DYNAMIC_DNS"), Code::ServiceEntryResolution, "spec.hosts[0]", E),
        ("ServiceEntry", se(", exportTo: ['~', ns]"), Code::InvalidExportTo, "spec.exportTo[0]", E),
        ("ServiceEntry", "{hosts: [db.example.com], resolution: DNS, ports: [{number: 5432, name: pg, protocol: TCP}]}".into(), Code::ServiceEntryResolution, "spec.ports[0]", W),
        // WorkloadEntry
        ("WorkloadEntry", "{labels: {app: a}}".into(), Code::Required, "spec.address", E),
        ("WorkloadEntry", "{address: 'unix:///var/run/a.sock', ports: {http: 80}}".into(), Code::Conflict, "spec.ports", E),
        ("WorkloadEntry", "{address: 'unix://relative.sock'}".into(), Code::InvalidValue, "spec.address", E),
        ("ServiceEntry", "{hosts: [local.example.com], resolution: STATIC, endpoints: [{address: 'unix:///run/app.sock'}], ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http-2, protocol: HTTP}]}".into(), Code::ServiceEntryResolution, "spec.endpoints[0].address", E),
        ("WorkloadEntry", "{address: 10.0.0.1, ports: {HTTP: 80}}".into(), Code::InvalidName, "spec.ports.HTTP", E),
        ("WorkloadEntry", "{address: 10.0.0.1, ports: {http: 0}}".into(), Code::InvalidPort, "spec.ports.http", E),
        // Rules whose boundaries the cases above left untested.
        ("DestinationRule", dr("{loadBalancer: {consistentHash: {httpHeaderName: x-user, useSourceIp: true}}}"), Code::Conflict, "spec.trafficPolicy.loadBalancer.consistentHash", E),
        ("DestinationRule", dr("{loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 10s, aggression: 0}}}"), Code::TrafficPolicy, "spec.trafficPolicy.loadBalancer.warmup.aggression", E),
        ("Gateway", gw(&srv(HTTP80, ", tls: {mode: SIMPLE}")), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", gw(&srv(HTTP80, ", tls: {credentialName: c}")), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", https("{mode: SIMPLE, credentialNames: [a, b, c]}"), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", gw(&srv(HTTP80, ", tls: {credentialNames: [a]}")), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", gw(&srv(HTTP80, ", tls: {privateKey: /k.pem}")), Code::GatewayTls, "spec.servers[0].tls", E),
        ("Gateway", gw(&srv(HTTP80, ", tls: {caCertificates: /ca.pem}")), Code::GatewayTls, "spec.servers[0].tls", E),
        ("VirtualService", vs(&format!("{{headers: {{request: {{set: {{'bad header': x}}}}}}, {ROUTE}}}")), Code::InvalidHeader, "spec.http[0].headers.request.set.bad header", E),
        ("VirtualService", vs(&format!("{{headers: {{request: {{remove: ['bad header']}}}}, {ROUTE}}}")), Code::InvalidHeader, "spec.http[0].headers.request.remove[0]", E),
        ("DestinationRule", dr("{loadBalancer: {localityLbSetting: {distribute: [{from: 'us/a/*', to: {'us/a/*': 100}}], failover: [{from: us, to: eu}]}}}"), Code::Conflict, "spec.trafficPolicy.loadBalancer.localityLbSetting", E),
        ("DestinationRule", dr("{loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s, attributes: [{name: SameSite, value: Strict}, {name: SameSite, value: Lax}]}}}}"), Code::Duplicate, "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1]", E),
        ("DestinationRule", dr("{loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s, attributes: [{name: '', value: x}]}}}}"), Code::Duplicate, "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[0]", E),
        ("DestinationRule", "{host: a.example.com, subsets: [{name: v1, labels: {'-version': v1}}]}".into(), Code::InvalidLabel, "spec.subsets[0].labels.-version", E),
        ("DestinationRule", "{host: a.example.com, subsets: [{name: v1, labels: {version: 'v1 beta'}}]}".into(), Code::InvalidLabel, "spec.subsets[0].labels.version", E),
        ("DestinationRule", "{host: a.example.com, exportTo: [Bad_NS]}".into(), Code::InvalidExportTo, "spec.exportTo[0]", E),
        ("DestinationRule", dr("{tunnel: {protocol: CONNECT, targetHost: '', targetPort: 8080}}"), Code::TrafficPolicy, "spec.trafficPolicy.tunnel.targetHost", E),
        ("DestinationRule", dr("{tunnel: {protocol: CONNECT, targetHost: 'bad host!', targetPort: 8080}}"), Code::TrafficPolicy, "spec.trafficPolicy.tunnel.targetHost", E),
        ("DestinationRule", "{host: a.example.com, exportTo: ['.'], workloadSelector: {matchLabels: {app: 'web*'}}}".into(), Code::InvalidLabel, "spec.workloadSelector.matchLabels", E),
        ("DestinationRule", "{host: a.example.com, exportTo: ['.'], workloadSelector: {matchLabels: {'app*': web}}}".into(), Code::InvalidLabel, "spec.workloadSelector.matchLabels", E),
        ("DestinationRule", dr("{outlierDetection: {consecutiveErrors: -1}}"), Code::TrafficPolicy, "spec.trafficPolicy.outlierDetection.consecutiveErrors", E),
        ("DestinationRule", "{host: a.example.com, subsets: [{name: v1, labels: {'bad_prefix!/version': v1}}]}".into(), Code::InvalidLabel, "spec.subsets[0].labels.bad_prefix!/version", E),
        ("Gateway", https("{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c.pem}]}"), Code::GatewayTls, "spec.servers[0].tls.tlsCertificates[0]", E),
        ("Gateway", https("{mode: SIMPLE, privateKey: /k.pem, credentialName: c}"), Code::GatewayTls, "spec.servers[0].tls", E),
        ("VirtualService", vs(&format!("{{directResponse: {{status: 200, body: {{string: {}}}}}}}", "x".repeat(1024 * 1024 + 1))), Code::InvalidDirectResponse, "spec.http[0].directResponse.body", E),
        ("VirtualService", vs(&format!("{{directResponse: {{status: 200, body: {{string: {}}}}}}}", "x".repeat(200 * 1024))), Code::InvalidDirectResponse, "spec.http[0].directResponse.body", W),
        ("VirtualService", "{tcp: [{route: [{destination: {host: a.example.com}}]}]}".into(), Code::Conflict, "spec", E),
        ("VirtualService", format!("{{hosts: [a.example.com], gateways: [gw.istio-system], http: [{{{ROUTE}}}]}}"), Code::InvalidGatewayRef, "spec.gateways[0]", E),
        ("VirtualService", format!("{{hosts: [a.example.com], gateways: [gw.istio-system.svc], http: [{{{ROUTE}}}]}}"), Code::InvalidGatewayRef, "spec.gateways[0]", W),
        ("VirtualService", vs(&format!("{{directResponse: {{status: 200, body: {{string: {}}}}}}}", "x".repeat(1024 * 1024))), Code::InvalidDirectResponse, "spec.http[0].directResponse.body", W),
        ("VirtualService", vs(&format!("{{fault: {{abort: {{httpStatus: 503, grpcStatus: UNAVAILABLE, percentage: {{value: 10}}}}}}, {ROUTE}}}")), Code::InvalidFault, "spec.http[0].fault.abort", E),
        ("VirtualService", vs(&format!("{{corsPolicy: {{allowOrigins: [{{exact: 'https://a.example.com'}}], allowHeaders: ['bad header']}}, {ROUTE}}}")), Code::InvalidCors, "spec.http[0].corsPolicy.allowHeaders[0]", E),
        ("ServiceEntry", "{hosts: ['api*.example.com'], ports: [{number: 443, name: tls, protocol: TLS}]}".into(), Code::InvalidHost, "spec.hosts[0]", W),
        ("ServiceEntry", "{hosts: [bad_host.example.com], resolution: DNS, ports: [{number: 443, name: https, protocol: HTTPS}]}".into(), Code::InvalidHost, "spec.hosts[0]", E),
        ("ServiceEntry", se(", resolution: STATIC, addresses: [10.0.0.0/33], endpoints: [{address: 10.0.0.1}]"), Code::InvalidValue, "spec.addresses[0]", E),
        ("ServiceEntry", se(", resolution: DNS, endpoints: [{address: '*.example.com'}]"), Code::ServiceEntryResolution, "spec.endpoints[0].address", E),
        ("WorkloadEntry", "{address: 'not an address!'}".into(), Code::InvalidValue, "spec.address", E),
        ("ServiceEntry", "{hosts: ['*.example.com'], resolution: DYNAMIC_DNS, addresses: [240.0.0.1], ports: [{number: 443, name: https, protocol: HTTPS}]}".into(), Code::ServiceEntryResolution, "spec", E),
    ]
}

#[test]
fn each_invalid_document_draws_its_code_at_its_field() {
    let mut failures = Vec::new();
    for (kind, spec, code, field, severity) in cases() {
        let yaml = doc(kind, &spec);
        let diags = check(&yaml);
        let hit = diags
            .iter()
            .any(|d| d.code == code && d.field.as_deref() == Some(field) && d.severity == severity);
        // Nothing else may be an error: a case tests one rule and no rule fires by accident.
        // Cross-resource findings (IST*) are expected here: the cases reference no real gateway.
        let local = |d: &&Diagnostic| !d.code.id().starts_with("IST");
        let stray: Vec<_> = diags
            .iter()
            .filter(local)
            .filter(|d| d.is_error() && d.code != code)
            .collect();
        let wrong_level = severity == W && diags.iter().filter(local).any(Diagnostic::is_error);
        if !hit || !stray.is_empty() || wrong_level {
            let got: Vec<String> = diags
                .iter()
                .map(|d| format!("{:?} {} {:?}", d.severity, d.code, d.field))
                .collect();
            failures.push(format!(
                "{kind} {spec}\n  want {severity:?} {code} {field}\n  got  {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_diagnostic_carries_file_line_resource_and_hint() {
    for (kind, spec, ..) in cases() {
        for d in check(&doc(kind, &spec)) {
            assert_eq!(d.file.as_deref(), Some("t.yaml"));
            assert!(d.line.is_some_and(|l| l >= 1), "{d}");
            assert!(d.hint.as_deref().is_some_and(|h| !h.is_empty()), "{d}");
            assert!(d.resource.is_some(), "{d}");
        }
    }
}

const CROSS: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*/app.example.com']
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw2, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*/app.example.com']
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: app, namespace: web}
spec:
  host: app
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: app, namespace: web}
spec:
  hosts: [app.web.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: web}
spec:
  hosts: [app.example.com, other.example.org]
  gateways: [istio-system/gw, missing-gw]
  http:
  - route:
    - destination: {host: app, subset: v3, port: {number: 80}}
    - destination: {host: app, subset: v1, port: {number: 8080}}
";

#[test]
fn cross_resource_checks_follow_istioctl_analyze() {
    let diags = check(CROSS);
    let find = |code: Code, field: &str| {
        diags
            .iter()
            .find(|d| d.code == code && d.field.as_deref() == Some(field))
    };
    let missing_gw = find(Code::ReferencedResourceNotFound, "spec.gateways[1]").expect("missing gateway");
    assert_eq!(missing_gw.severity, E);
    assert!(missing_gw.message.contains("web/missing-gw"), "{missing_gw}");
    let subset = find(
        Code::ReferencedResourceNotFound,
        "spec.http[0].route[0].destination.subset",
    )
    .expect("subset");
    assert_eq!(subset.severity, E);
    assert!(subset.hint.as_deref().unwrap_or("").contains("v1, v2"), "{subset}");
    assert!(find(
        Code::ReferencedResourceNotFound,
        "spec.http[0].route[1].destination.subset"
    )
    .is_none());
    let port = find(
        Code::ReferencedResourceNotFound,
        "spec.http[0].route[1].destination.port.number",
    )
    .expect("port");
    assert_eq!(port.severity, E);
    // IST0132 needs no host of the VirtualService on the gateway; a missing gateway has none.
    assert!(find(Code::VirtualServiceHostNotInGateway, "spec.gateways[0]").is_none());
    let host = find(Code::VirtualServiceHostNotInGateway, "spec.gateways[1]").expect("IST0132");
    assert_eq!(host.severity, W);
    assert_eq!(host.line, Some(41));
    // Both Gateways of the workload claim the host on port 80: each is reported.
    let conflicts: Vec<_> = diags
        .iter()
        .filter(|d| d.code == Code::ConflictingGateways)
        .map(|d| (d.resource.as_ref().map(|r| r.name.clone()), d.field.clone(), d.severity))
        .collect();
    let at = Some("spec.servers[0]".to_string());
    assert_eq!(
        conflicts,
        [(Some("gw".into()), at.clone(), E), (Some("gw2".into()), at, E)]
    );
}

#[test]
fn namespace_scoped_server_hosts_limit_which_virtual_services_bind() {
    let yaml = CROSS.replace("'*/app.example.com'", "'istio-system/app.example.com'");
    let diags = check(&yaml);
    assert!(diags
        .iter()
        .any(|d| d.code == Code::VirtualServiceHostNotInGateway && d.field.as_deref() == Some("spec.gateways[0]")));
}

#[test]
fn https_redirect_is_questioned_only_where_it_is_set_off_an_http_server() {
    let redirect_warnings = |servers: &str| {
        check(&doc("Gateway", &format!("{{servers: [{servers}]}}")))
            .into_iter()
            .filter(|d| d.field.as_deref().is_some_and(|f| f.ends_with("httpsRedirect")))
            .count()
    };
    let https =
        "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c}}";
    let http = "{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*'], tls: {httpsRedirect: true}}";
    let both = "{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: c, httpsRedirect: true}}";
    assert_eq!(redirect_warnings(https), 0);
    assert_eq!(redirect_warnings(http), 0);
    assert_eq!(redirect_warnings(both), 1);
}

#[test]
fn a_gateway_named_without_its_namespace_is_found_for_the_hint() {
    let gateway = |ns: &str, name: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
             servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]\n---\n"
        )
    };
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: app, namespace: web}\nspec:\n  \
              hosts: [app.example.com]\n  gateways: [edge]\n  http: [{route: [{destination: {host: app.example.com}}]}]\n";
    let yaml = format!(
        "{}{}{vs}",
        gateway("istio-system", "other"),
        gateway("gateways", "edge")
    );
    let diags = check(&yaml);
    let missing = diags
        .iter()
        .find(|d| d.code == Code::ReferencedResourceNotFound && d.field.as_deref() == Some("spec.gateways[0]"))
        .expect("web/edge does not exist");
    assert_eq!(
        missing.hint.as_deref(),
        Some("a Gateway `edge` exists in namespace `gateways`: write `gateways/edge`")
    );
}

#[test]
fn direct_response_bodies_are_warned_over_100_kib_as_decoded() {
    let body_findings = |body: &str| -> Vec<Severity> {
        let spec = format!("{{hosts: [a.example.com], http: [{{directResponse: {{status: 200, body: {body}}}}}]}}");
        check(&doc("VirtualService", &spec))
            .into_iter()
            .filter(|d| d.field.as_deref() == Some("spec.http[0].directResponse.body"))
            .map(|d| d.severity)
            .collect()
    };
    let string = |n: usize| format!("{{string: {}}}", "x".repeat(n));
    assert_eq!(body_findings(&string(100 * 1024)), []);
    assert_eq!(body_findings(&string(100 * 1024 + 1)), [W]);
    // base64 `bytes` count as the bytes they decode to: 4 characters are 3 bytes.
    let bytes = |n: usize| format!("{{bytes: {}}}", "A".repeat(n));
    assert_eq!(body_findings(&bytes(120 * 1024)), [], "90 KiB decoded");
    assert_eq!(body_findings(&bytes(140 * 1024)), [W], "105 KiB decoded");
}

#[test]
fn dynamic_dns_inside_the_mesh_is_refused_behind_a_waypoint() {
    let errors = |waypoint: &str, location: &str| {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: {{name: t, namespace: ns, labels: {{istio.io/use-waypoint: {waypoint}}}}}\n\
             spec: {{hosts: ['*.example.com'], resolution: DYNAMIC_DNS, location: {location}, \
             ports: [{{number: 443, name: tls, protocol: TLS}}]}}\n"
        );
        check(&yaml)
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| d.field.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    // Istio's TestValidateServiceEntries case 59.
    assert_eq!(errors("my-waypoint", "MESH_INTERNAL"), ["spec.location"]);
    assert_eq!(errors("None", "MESH_INTERNAL"), Vec::<String>::new());
    assert_eq!(errors("my-waypoint", "MESH_EXTERNAL"), Vec::<String>::new());
}

#[test]
fn a_delay_without_fixed_delay_is_questioned_once() {
    let no_effect = |delay: &str| {
        let spec = format!("{{hosts: [a.example.com], http: [{{fault: {{delay: {delay}}}, {ROUTE}}}]}}");
        check(&doc("VirtualService", &spec))
            .into_iter()
            .filter(|d| d.field.as_deref() == Some("spec.http[0].fault.delay"))
            .count()
    };
    assert_eq!(no_effect("{fixedDelay: 5s, percentage: {value: 10}}"), 0);
    // exponentialDelay is questioned on its own field; the delay itself is not again.
    assert_eq!(no_effect("{exponentialDelay: 1s, percentage: {value: 10}}"), 0);
    assert_eq!(no_effect("{percentage: {value: 10}}"), 1);
}

#[test]
fn an_http2_error_abort_is_refused_once_as_unsupported() {
    // Istio's API has `http2Error`, and its validation refuses it as not supported yet: that is
    // the one error, not also "abort needs httpStatus or grpcStatus".
    let spec = "{hosts: [a.example.com], http: [{fault: {abort: {http2Error: REFUSED_STREAM, percentage: {value: 1}}}, route: [{destination: {host: a.example.com}}]}]}";
    let faults: Vec<_> = check(&doc("VirtualService", spec))
        .into_iter()
        .filter(|d| d.code == Code::InvalidFault)
        .collect();
    assert_eq!(faults.len(), 1, "{faults:#?}");
    assert_eq!(faults[0].field.as_deref(), Some("spec.http[0].fault.abort.http2Error"));
    // An abort with no error at all needs one.
    let spec = "{hosts: [a.example.com], http: [{fault: {abort: {percentage: {value: 1}}}, route: [{destination: {host: a.example.com}}]}]}";
    let faults: Vec<_> = check(&doc("VirtualService", spec))
        .into_iter()
        .filter(|d| d.code == Code::InvalidFault)
        .filter_map(|d| d.field)
        .collect();
    assert_eq!(faults, ["spec.http[0].fault.abort"]);
}

mod tls;
mod unreachable;
mod valid;
