//! Diagnostics: every problem found in a config, with where it is (file, line, resource,
//! field path), a stable code, and a hint that says how to fix it.

use std::fmt;

use serde::Serialize;

/// How bad a problem is, as Istio classifies it: errors reject the config, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "note",
        })
    }
}

macro_rules! codes {
    ($($variant:ident = $id:literal, $title:literal;)*) => {
        /// A stable identifier for each kind of problem. `IST*` codes are `istioctl analyze`'s own.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $($variant),* }

        impl Code {
            /// Every code, in the order of the table.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable identifier, e.g. `MB0101` or `IST0101`.
            pub fn id(self) -> &'static str {
                match self { $(Code::$variant => $id),* }
            }

            /// A short description of the rule.
            pub fn title(self) -> &'static str {
                match self { $(Code::$variant => $title),* }
            }
        }
    };
}

codes! {
    YamlSyntax = "MB0100", "the file is not valid YAML";
    UnknownField = "MB0101", "a field that the resource's schema does not have";
    WrongType = "MB0102", "a value of the wrong type";
    UnknownEnumValue = "MB0103", "a value outside the field's enumeration";
    UnsupportedApiVersion = "MB0104", "an apiVersion that is not networking.istio.io v1, v1beta1 or v1alpha3";
    SkippedDocument = "MB0105", "a document of a kind meshbench does not use (skipped)";
    DuplicateKey = "MB0106", "a mapping names the same key twice";
    MissingName = "MB0107", "metadata.name is missing or invalid";
    DefaultNamespace = "MB0108", "metadata.namespace is absent, `default` is used";
    DuplicateResource = "MB0109", "two resources of one kind share a namespace and name";
    NotAnObject = "MB0110", "a document or field that must be a mapping is not";
    Required = "MB0120", "a required field is missing or empty";
    InvalidHost = "MB0121", "an invalid host name";
    InvalidPort = "MB0122", "a port number outside 1..65535";
    InvalidDuration = "MB0123", "an invalid duration";
    InvalidPercent = "MB0124", "a percentage outside its range";
    InvalidRegex = "MB0125", "a regular expression that RE2 rejects or that is too long";
    InvalidStringMatch = "MB0126", "a string match with an empty prefix or regex";
    InvalidLabel = "MB0127", "an invalid label key or value";
    InvalidExportTo = "MB0128", "an invalid exportTo list";
    InvalidName = "MB0129", "a name that must be a DNS label";
    Conflict = "MB0130", "fields that cannot be set together";
    InvalidValue = "MB0131", "a value that Istio rejects";
    UnknownProtocol = "MB0132", "an unknown port protocol";
    Duplicate = "MB0133", "a duplicate entry where entries must be unique";
    GatewayTls = "MB0200", "a Gateway server's TLS settings are inconsistent";
    CipherSuite = "MB0201", "an unknown or duplicate cipher suite (dropped)";
    VsRule = "MB0300", "an HTTP rule's actions are inconsistent";
    InvalidHeader = "MB0301", "an invalid header name or header operation";
    InvalidWeight = "MB0302", "invalid route weights";
    InvalidRedirect = "MB0303", "an invalid redirect";
    InvalidRewrite = "MB0304", "an invalid rewrite";
    InvalidFault = "MB0305", "an invalid fault injection";
    InvalidRetry = "MB0306", "an invalid retry policy";
    InvalidCors = "MB0307", "an invalid CORS policy";
    InvalidGatewayRef = "MB0308", "an invalid gateway reference";
    SniNotInHosts = "MB0309", "a TLS route's SNI host is not one of the VirtualService hosts";
    InvalidDirectResponse = "MB0310", "an invalid direct response";
    TrafficPolicy = "MB0400", "an invalid traffic policy";
    ClientTls = "MB0401", "an invalid client TLS setting";
    ServiceEntryResolution = "MB0500", "a ServiceEntry's resolution does not fit its hosts, addresses or endpoints";
    Deprecated = "IST0002", "a deprecated field";
    ReferencedResourceNotFound = "IST0101", "a referenced gateway, host, port or subset does not exist";
    SchemaValidationError = "IST0106", "a webhook error, as istioctl analyze reports it";
    ConflictingMeshGatewayHosts = "IST0109", "VirtualServices bound to the mesh define the same host";
    DestinationPortRequired = "IST0112", "a destination without a port on a service with several ports";
    NoCaCertificatesDestination = "IST0128", "client TLS without caCertificates: the server is not verified";
    NoCaCertificatesPort = "IST0129", "port-level client TLS without caCertificates: the server is not verified";
    UnreachableRule = "IST0130", "a rule that no request reaches";
    IneffectiveMatch = "IST0131", "a match that an earlier match already takes";
    VirtualServiceHostNotInGateway = "IST0132", "none of a VirtualService's hosts is exposed by a Gateway it binds to";
    SchemaWarning = "IST0133", "a webhook warning, as istioctl analyze reports it";
    ServiceEntryAddressesRequired = "IST0134", "a TCP (or unset protocol) ServiceEntry port without addresses";
    GatewayDuplicateCertificate = "IST0138", "Gateways of one workload share a certificate";
    IngressRouteRulesNotAffected = "IST0140", "a gateway route without a subset, where another VirtualService splits the host by subset";
    ConflictingGateways = "IST0145", "two Gateways claim the same host on one port";
    ReferencedInternalGateway = "IST0165", "a reference to a Gateway generated from a Kubernetes Gateway";
    ConflictingServiceEntryProtocol = "IST0177", "ServiceEntries give one host and port different protocols";
}

impl Code {
    /// Whether the code is one of istioctl analyze's (`IST*`) rather than a webhook rejection.
    pub fn is_analysis(self) -> bool {
        self.id().starts_with("IST")
    }

    /// The level `istioctl analyze` gives the message (`pkg/config/analysis/msg/messages.yaml`);
    /// None for meshbench's own codes.
    pub fn istio_level(self) -> Option<Severity> {
        use Code::*;
        Some(match self {
            ReferencedResourceNotFound
            | SchemaValidationError
            | ConflictingMeshGatewayHosts
            | DestinationPortRequired
            | ConflictingGateways => Severity::Error,
            IneffectiveMatch => Severity::Info,
            c if c.is_analysis() => Severity::Warning,
            _ => return None,
        })
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// The resource a diagnostic is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// Field path inside the document, e.g. `spec.http[1].route[0].weight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Diagnostic {
    pub fn new(severity: Severity, code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            code,
            message: message.into(),
            hint: None,
            file: None,
            line: None,
            resource: None,
            field: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn at(mut self, file: &str, line: usize) -> Self {
        self.file = Some(file.to_string());
        self.line = Some(line);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Compiler style: `file:line: error[CODE]: message`, then the resource and field, then the hint.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            _ => {}
        }
        write!(f, "{}[{}]: {}", self.severity, self.code, self.message)?;
        match (&self.resource, &self.field) {
            (Some(r), Some(field)) => write!(f, "\n  --> {r}, {field}")?,
            (Some(r), None) => write!(f, "\n  --> {r}")?,
            (None, Some(field)) => write!(f, "\n  --> {field}")?,
            (None, None) => {}
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase().replace(['_', '-'], "");
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&lower, &c.to_ascii_lowercase().replace(['_', '-'], "")),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_ids_are_unique() {
        let mut ids: Vec<_> = Code::ALL.iter().map(|c| c.id()).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[test]
    fn istio_levels_follow_istios_message_table() {
        assert_eq!(Code::ReferencedResourceNotFound.istio_level(), Some(Severity::Error));
        assert_eq!(Code::ConflictingGateways.istio_level(), Some(Severity::Error));
        assert_eq!(Code::IneffectiveMatch.istio_level(), Some(Severity::Info));
        assert_eq!(Code::UnreachableRule.istio_level(), Some(Severity::Warning));
        assert_eq!(Code::InvalidHost.istio_level(), None);
        assert!(Code::ALL.iter().all(|c| c.is_analysis() == c.istio_level().is_some()));
    }

    #[test]
    fn did_you_mean_finds_typos_and_snake_case() {
        let fields = ["hosts", "gateways", "http", "tls", "tcp", "exportTo"];
        assert_eq!(did_you_mean("host", fields), Some("hosts"));
        assert_eq!(did_you_mean("gatways", fields), Some("gateways"));
        assert_eq!(did_you_mean("export_to", fields), Some("exportTo"));
        assert_eq!(did_you_mean("completely_else", fields), None);
    }

    #[test]
    fn display_is_compiler_style() {
        let mut d = Diagnostic::new(Severity::Error, Code::InvalidWeight, "weight -1 is negative")
            .with_hint("use a weight of 0 or more")
            .at("vs.yaml", 12);
        d.resource = Some(ResourceRef {
            kind: "VirtualService".into(),
            namespace: "default".into(),
            name: "r".into(),
        });
        d.field = Some("spec.http[0].route[0].weight".into());
        assert_eq!(
            d.to_string(),
            "vs.yaml:12: error[MB0302]: weight -1 is negative\n  --> VirtualService default/r, \
             spec.http[0].route[0].weight\n  = hint: use a weight of 0 or more"
        );
    }
}
