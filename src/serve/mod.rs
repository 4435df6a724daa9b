//! `clusterup serve`: the control API, push webhooks and a built-in
//! schedule, in one long-running process. It adds no semantics of its own:
//! every operation is the CLI's (see `runs`), under the CLI's locks.

mod api;
mod auth;
mod fleet;
mod hooks;
mod page;
mod runs;
mod ui;

#[cfg(test)]
pub use api::reference;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::exit::{ExitStatus, usage};
use crate::output::Printer;
use crate::settings::StackSettings;

/// Bodies of API calls are small JSON objects; GitHub's push payloads
/// run to a few hundred KiB for large pushes.
const API_BODY: usize = 64 * 1024;
const HOOK_BODY: usize = 5 * 1024 * 1024;
/// A client that has not sent its request head by then is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 64;

pub struct Options {
    pub listen: SocketAddr,
    pub credentials: Option<PathBuf>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub insecure_http: bool,
    /// `apply --auto` of every stack this often (None: only on SIGUSR1).
    pub every: Option<Duration>,
    /// Up to this much more before each scheduled run.
    pub jitter: Duration,
    /// Global options for each run of the CLI (`--config=…`).
    pub global: Vec<String>,
}

pub fn run(stacks: &[StackSettings], options: Options, printer: &Printer) -> Result<ExitStatus> {
    let mut creds = auth::Credentials::load(options.credentials.as_deref(), &|v| std::env::var(v).ok())?;
    if !options.listen.ip().is_loopback() && options.tls.is_none() && !options.insecure_http {
        return Err(usage(format!(
            "serve: {} is not a loopback address: give --tls-cert and --tls-key, or --insecure-http behind a TLS-terminating proxy",
            options.listen
        )));
    }
    let tls = options.tls.as_ref().map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
    if !creds.has_tokens() {
        printer.warn("serve: no API tokens (--credentials, CLUSTERUP_READ_TOKEN, CLUSTERUP_OPERATE_TOKEN): only /api/v1/health and signed webhooks answer");
    }
    let locks = stacks.iter().map(|s| (s.name.clone(), crate::state::lock_file(&s.state_dir))).collect();
    let exe = std::env::current_exe().context("finding clusterup's own executable")?;
    let runner = runs::Runner::new(exe, options.global.clone(), locks);
    let fleet = fleet::Fleet::new(creds.take_peers());
    let api = Arc::new(api::Api::new(creds, runner.clone(), stacks.to_vec(), tls.is_some(), fleet));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(options.listen))
        .with_context(|| format!("listening on {}", options.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let bound = listener.local_addr().unwrap_or(options.listen);
    log(&format!("listening on {scheme}://{bound}/ ({} stacks)", stacks.len()));

    let now = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, now.clone()).context("handling SIGUSR1")?;
    let scheduler = {
        let runner = runner.clone();
        let (every, jitter) = (options.every, options.jitter);
        std::thread::spawn(move || schedule(&runner, every, jitter, &now, &crate::signals::stop_requested))
    };
    runtime.block_on(accept(listener, tls, api));
    log(&format!("stopping: {} operation(s) finish or roll back first", runner.running()));
    runner.stop();
    let _ = scheduler.join();
    Ok(ExitStatus::Success)
}

/// One plain line on stderr: journald and `docker logs` add the time.
fn log(line: &str) {
    let _ = writeln!(std::io::stderr(), "serve: {}", crate::redact::scrub(line));
}

async fn accept(listener: tokio::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, api: Arc<api::Api>) {
    let places = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                // Over the cap, a connection is closed at once rather than
                // queued behind slow ones.
                let Ok(place) = places.clone().try_acquire_owned() else { continue };
                let (api, tls) = (api.clone(), tls.clone());
                tokio::spawn(async move {
                    let _place = place;
                    match tls {
                        Some(acceptor) => {
                            if let Ok(Ok(stream)) = tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                                connection(TokioIo::new(stream), api, peer).await;
                            }
                        }
                        None => connection(TokioIo::new(stream), api, peer).await,
                    }
                });
            }
            _ = tick.tick() => if crate::signals::stop_requested() { return },
        }
    }
}

async fn connection<I>(io: I, api: Arc<api::Api>, peer: SocketAddr)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| handle(api.clone(), peer, req));
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .serve_connection(io, service)
        .await;
}

async fn handle(
    api: Arc<api::Api>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let limit = if path.starts_with("/hooks/") { HOOK_BODY } else { API_BODY };
    let body = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e.downcast_ref::<http_body_util::LengthLimitError>().is_some();
            let (status, why) = if too_big {
                (413, format!("request body over {limit} bytes"))
            } else {
                (400, format!("reading the request: {e}"))
            };
            return Ok(response(api::Reply::error(status, why)));
        }
    };
    let method = parts.method.to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let headers = parts.headers;
    let started = Instant::now();
    let reply = tokio::task::spawn_blocking(move || {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(String::from);
        let call =
            api::Call { method: &method, path: &path, query: &query, header: &header, body: &body, peer: peer.ip() };
        let reply = api.handle(&call);
        log(&format!(
            "{} {method} {path} {} {}ms{}",
            peer.ip(),
            reply.status,
            started.elapsed().as_millis(),
            reply.caller.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
        ));
        reply
    })
    .await
    .unwrap_or_else(|e| api::Reply::error(500, format!("the request's handler failed: {e}")));
    Ok(response(reply))
}

fn response(reply: api::Reply) -> Response<Full<Bytes>> {
    let (body, kind) = match &reply.html {
        Some(page) => (page.clone().into_bytes(), "text/html; charset=utf-8"),
        None => {
            let mut body = serde_json::to_vec_pretty(&reply.body).unwrap_or_default();
            body.push(b'\n');
            (body, "application/json")
        }
    };
    let mut builder = Response::builder()
        .status(reply.status)
        .header("content-type", kind)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer");
    if reply.html.is_some() {
        // Only this page's own script and style run; no one may frame it.
        builder = builder.header("content-security-policy", page::POLICY.as_str());
    }
    if let Some(cookie) = &reply.set_cookie {
        builder = builder.header("set-cookie", cookie);
    }
    if let Some(location) = &reply.location {
        builder = builder.header("location", location);
    }
    if let Some(seconds) = reply.retry_after {
        builder = builder.header("retry-after", seconds);
    }
    if reply.status == 401 {
        builder = builder.header("www-authenticate", "Bearer");
    }
    builder.body(Full::new(Bytes::from(body))).expect("valid response parts")
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| usage(format!("--tls-cert {}: {e}", cert.display())))?;
    auth::refuse_shared(key).map_err(|e| usage(format!("--tls-key {}: {e}", key.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| usage(format!("--tls-key {}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| usage(format!("--tls-cert/--tls-key: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// `apply --auto` of every stack every `every` (plus up to `jitter`, so a
/// fleet's hosts do not all ask the registry at once), and at once on
/// SIGUSR1. A run that finds a stack busy is skipped, not queued.
fn schedule(
    runner: &Arc<runs::Runner>,
    every: Option<Duration>,
    jitter: Duration,
    now: &AtomicBool,
    stop: &dyn Fn() -> bool,
) {
    let next = || {
        every.map(|e| {
            let spread = u64::from_le_bytes(crate::redact::random_key()[..8].try_into().expect("8 bytes"));
            let extra = if jitter.is_zero() { 0 } else { spread % jitter.as_millis().max(1) as u64 };
            Instant::now() + e + Duration::from_millis(extra)
        })
    };
    let mut due = next();
    while !stop() {
        let asked = now.swap(false, Ordering::Relaxed);
        if asked || due.is_some_and(|d| Instant::now() >= d) {
            let by = if asked { "SIGUSR1" } else { "schedule" };
            match runner.start(runs::auto_apply(None, by)) {
                Ok(id) => log(&format!("{by}: apply --auto started as operation {id}")),
                Err(busy) => log(&format!("{by}: skipped: {}", busy.error)),
            }
            due = next();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--every` starts `apply --auto` of every stack on its interval, and
    /// SIGUSR1's flag one at once, without waiting for the interval.
    #[test]
    fn the_schedule_applies_on_its_interval_and_when_asked() {
        let runner = runs::Runner::new("/bin/true".into(), Vec::new(), Default::default());
        let started = Instant::now();
        let asked = AtomicBool::new(true);
        let stop = || runner.recent().len() >= 3 || started.elapsed() > Duration::from_secs(20);
        schedule(&runner, Some(Duration::from_millis(300)), Duration::from_millis(100), &asked, &stop);
        let ops = runner.recent();
        let by: Vec<&str> = ops.iter().rev().map(|o| o.by.as_str()).collect();
        assert_eq!(by, ["SIGUSR1", "schedule", "schedule"], "{ops:?}");
        assert!(ops.iter().all(|o| o.command == ["apply", "--auto"]));
        assert!(started.elapsed() >= Duration::from_millis(600), "on the interval, not at once");
    }
}
