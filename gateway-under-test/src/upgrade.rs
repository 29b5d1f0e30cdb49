//! HTTP/1.1 upgrades (WebSocket) through the gateway: the request goes upstream as is, and on
//! 101 both connections are joined byte for byte.

use http::{HeaderMap, Request, Response, Uri};
use http_body_util::BodyExt;

use crate::compile::{CompiledRoute, UpstreamCluster};
use crate::context::{Body, Outcome};
use crate::errors::{fail, Failure};
use crate::forward::{apply_ops, error_chain, rewritten_path};
use crate::h1pool::H1Error;
use crate::replay::RequestBody;

pub(crate) fn is_upgrade(h: &HeaderMap) -> bool {
    let connection_upgrade = h
        .get_all(crate::names::CONNECTION)
        .iter()
        .any(|v| crate::names::has_token(v, "upgrade"));
    connection_upgrade && h.contains_key(crate::names::UPGRADE)
}

/// An HTTP/1.1 upgrade (WebSocket): forwarded as is; on 101 both sides are joined byte for byte.
pub(crate) async fn upgrade<B>(
    cluster: &UpstreamCluster,
    r: &CompiledRoute,
    mut req: Request<B>,
    out: &mut Outcome,
) -> Response<Body> {
    let downstream = hyper::upgrade::on(&mut req);
    let Some(i) = crate::balance::pick(cluster, None, &[]) else {
        return fail(Failure::NoHealthyUpstream, false, out);
    };
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    out.upstream_host = cluster.address(i, &authority);
    let crate::upstream::Client::H1(pool) = cluster.client.get() else {
        return fail(Failure::NoCluster, false, out);
    };
    let (mut parts, _) = req.into_parts();
    let path = rewritten_path(r, &parts.uri);
    apply_ops(&mut parts.headers, r.route.request_headers.as_ref());
    let Ok(uri) = path.parse::<Uri>() else {
        return fail(Failure::BadRequest(format!("bad upstream path {path}")), false, out);
    };
    let mut up = Request::new(RequestBody::empty().attempt());
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = parts.headers;
    if !up.headers().contains_key(http::header::HOST) {
        if let Ok(host) = http::HeaderValue::from_str(&authority) {
            up.headers_mut().insert(http::header::HOST, host);
        }
    }
    let mut resp = match pool.send(out.upstream_host.clone(), up).await {
        Ok(resp) => resp,
        Err(H1Error::Connect(why)) => return fail(Failure::ConnectFailure(why), false, out),
        Err(H1Error::Http(e)) => return fail(Failure::Reset(error_chain(&e)), false, out),
        Err(H1Error::Wire(why)) => return fail(Failure::Reset(why), false, out),
    };
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(down), Ok(up)) = (downstream.await, upstream.await) {
                let (mut down, mut up) = (hyper_util::rt::TokioIo::new(down), hyper_util::rt::TokioIo::new(up));
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            }
        });
    }
    resp.map(|b| b.map_err(Into::into).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn an_upgrade_needs_the_connection_token_and_the_upgrade_header() {
        // RFC 9110 7.8: `Upgrade` is listed in Connection, among other tokens, in any case.
        assert!(is_upgrade(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(is_upgrade(&headers(&[
            ("connection", "keep-alive"),
            ("connection", "upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&headers(&[
            ("connection", "keep-alive"),
            ("upgrade", "websocket")
        ])));
    }
}
