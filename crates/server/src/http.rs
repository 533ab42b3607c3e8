//! The HTTP listener (`--http-port`, default 9150): what Kubernetes probes
//! and operators ask.
//!
//! - `GET /healthz`: 200 while the process serves at all.
//! - `GET /readyz`: 200 once the node has joined and owns its arcs of the
//!   ring (ARCHITECTURE.md's readiness), else 503; a plain single node is
//!   always ready.
//! - `GET /cluster`: this node's view of the cluster as JSON.
//! - `GET /metrics`: Prometheus text format (see `metrics`).
//! - `GET /hotkeys`: the most requested and most missed keys, as JSON.
//!
//! HTTP/1.1 only, one small task per connection, no keep-alive limits
//! beyond hyper's own; nothing here touches the store.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::Node;
use crate::metrics::Metrics;

/// Longest a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn serve(listener: TcpListener, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = node.clone();
        conns.spawn(async move {
            let service = service_fn(move |request| {
                let response = answer(&node, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("http connection: {e}");
            }
        });
    }
    conns.abort_all();
}

fn answer(node: &Node, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if node.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => match &node.metrics {
            Some(metrics) => body(
                metrics.render(node),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            None => text(StatusCode::NOT_FOUND, "metrics are off (--metrics off)\n"),
        },
        "/hotkeys" => match &node.metrics {
            Some(metrics) => body(hotkeys_json(metrics), JSON),
            None => text(StatusCode::NOT_FOUND, "metrics are off (--metrics off)\n"),
        },
        "/cluster" => body(cluster_json(node), JSON),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

const JSON: &str = "application/json";

/// A 200 answer carrying `content` of `content_type`.
fn body(content: String, content_type: &'static str) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, Bytes::from(content), content_type)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(
        status,
        Bytes::from_static(body.as_bytes()),
        "text/plain; charset=utf-8",
    )
}

fn respond(
    status: StatusCode,
    content: Bytes,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(content));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `/hotkeys`: `{"requested":[{"key":…,"count":…,"error":…},…],"missed":[…]}`.
fn hotkeys_json(metrics: &Metrics) -> String {
    let (requested, missed) = metrics.hot_keys();
    let mut j = String::from("{");
    for (i, (what, list)) in [("requested", requested), ("missed", missed)]
        .iter()
        .enumerate()
    {
        if i > 0 {
            j.push(',');
        }
        let _ = write!(j, "\"{what}\":[");
        for (n, hot) in list.iter().enumerate() {
            if n > 0 {
                j.push(',');
            }
            j.push_str("{\"key\":");
            json_str(&mut j, &hot.key);
            let _ = write!(j, ",\"count\":{},\"error\":{}}}", hot.count, hot.error);
        }
        j.push(']');
    }
    j.push('}');
    j
}

/// `{"node":…,"ready":…,"generation":…,"epoch":…,"ring_version":…,
/// "ring_members":[…],"members":[{…}],"forwarded":{…}}`; a plain single node
/// answers `{"node":null,"ready":true,…}` with no members.
pub(crate) fn cluster_json(node: &Node) -> String {
    let mut j = String::with_capacity(512);
    let Some(router) = &node.router else {
        j.push_str(r#"{"node":null,"ready":true,"members":[]}"#);
        return j;
    };
    let table = router.table();
    let view = &table.view;
    j.push_str("{\"node\":");
    json_str(&mut j, view.local.name().as_str());
    let _ = write!(
        j,
        ",\"state\":\"{}\",\"ready\":{},\"generation\":{},\"epoch\":{},\"ring_version\":\"{:016x}\",\"ring_members\":[",
        view.local.state(),
        table.ready,
        view.generation(),
        view.epoch,
        view.ring.version()
    );
    for (i, name) in view.ring.members().iter().enumerate() {
        if i > 0 {
            j.push(',');
        }
        json_str(&mut j, name.as_str());
    }
    j.push_str("],\"members\":[");
    for (i, m) in view.members.iter().enumerate() {
        if i > 0 {
            j.push(',');
        }
        j.push_str("{\"name\":");
        json_str(&mut j, m.name().as_str());
        let _ = write!(j, ",\"state\":\"{}\",\"memcache\":", m.state());
        json_str(&mut j, &m.memcache_addr());
        j.push_str(",\"peer\":");
        json_str(&mut j, &m.peer_addr());
        j.push_str(",\"http\":");
        json_str(&mut j, &m.http_addr());
        let _ = write!(j, ",\"generation\":{}}}", m.generation());
    }
    j.push_str("],\"forwarded\":{");
    for (i, (name, stats)) in router.peer_stats().iter().enumerate() {
        if i > 0 {
            j.push(',');
        }
        json_str(&mut j, name.as_str());
        let _ = write!(
            j,
            ":{{\"operations\":{},\"errors\":{}}}",
            stats.forwarded.load(Ordering::Relaxed),
            stats.errors.load(Ordering::Relaxed)
        );
    }
    j.push_str("}}");
    j
}

/// A JSON string literal (names and hosts are printable, but escape
/// anyway).
fn json_str(j: &mut String, s: &str) {
    j.push('"');
    for c in s.chars() {
        match c {
            '"' => j.push_str("\\\""),
            '\\' => j.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(j, "\\u{:04x}", u32::from(c));
            }
            c => j.push(c),
        }
    }
    j.push('"');
}
